"""Deferred batch work: a FIFO queue per (zone, model, workload) key, released into spare capacity.

Batch requests do not go to a backend when they arrive. They wait in their key's queue (arrival
order, so earliest deadline first within a key) and the simulator releases them every
``batch_tick_s`` (default 5 s of simulated time), before the tick's interactive arrivals:

    expire   a queued request whose deadline t_i + deadline_w has passed is taken out and rejected
             as ``expired`` (the OpenAI Batch API's status for it)
    room[b]  = batch_limit[b] + reuse[b]    batch_limit of the router core (LoadState.batch_limit):
                                            free slots interactive work does not hold in reserve;
                                            reuse[b] = floor(due[b] batch_inflight[b] / inflight[b]), due[b]:
                                            requests of b that end before the next release (the batch
                                            share of them frees slots batch work may take again)
    decide   the router core decides the queued counts per key against that room
             (:func:`sovcloud.sim.route.decide_keys`): granted requests leave their queues in
             arrival order and start at the release time, or, for the batch share of the slots that free
             before the next release, when that slot frees
    a key no backend may ever serve (residency, or its model served nowhere) is rejected on arrival;
    unhealthy or saturated keys keep waiting

At the horizon a queued request whose deadline has passed is ``expired``; the others are in flight.

Storage: one ring buffer per key in flat arrays (``off[q]`` .. ``off[q] + cap[q]``), pushed and
popped by compiled loops; a full buffer doubles every key's capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from sovcloud.routing.router import EXPIRED, NO_BACKEND, RESIDENCY, LoadState, RouteTable
from sovcloud.sim import kernels
from sovcloud.sim.core import Engine
from sovcloud.sim.kernels import jit
from sovcloud.sim.route import decide_keys, rank
from sovcloud.sim.traffic import Requests

__all__ = ["BatchQueue", "Deferral", "Taken"]

f8 = NDArray[np.float64]
i8 = NDArray[np.int64]


@jit
def _push(q: i8, t: f8, inp: f8, out: f8, rid: i8, off: i8, cap: i8, head: i8, size: i8,
          bt: f8, bi: f8, bo: f8, br: i8) -> int:
    """Append requests to their keys' rings; returns how many fit (the caller grows and calls again)."""
    for i in range(q.shape[0]):
        k = q[i]
        if size[k] == cap[k]:
            return i
        j = off[k] + (head[k] + size[k]) % cap[k]
        bt[j], bi[j], bo[j], br[j] = t[i], inp[i], out[i], rid[i]
        size[k] += 1
    n: int = q.shape[0]
    return n


@jit
def _pop(n: i8, off: i8, cap: i8, head: i8, size: i8, bt: f8, bi: f8, bo: f8, br: i8,
         t: f8, inp: f8, out: f8, rid: i8, key: i8) -> None:
    """Take the first ``n[k]`` requests of every key k into the output arrays (keys in order)."""
    j = 0
    for k in range(n.shape[0]):
        for _ in range(n[k]):
            s = off[k] + head[k]
            t[j], inp[j], out[j], rid[j], key[j] = bt[s], bi[s], bo[s], br[s], k
            head[k] = (head[k] + 1) % cap[k]
            size[k] -= 1
            j += 1


@jit
def _overdue(now: float, deadline: f8, off: i8, cap: i8, head: i8, size: i8, bt: f8, n: i8) -> None:
    """``n[k]``: how many requests at the head of key k's queue are past their deadline at ``now``."""
    for k in range(n.shape[0]):
        c = 0
        while c < size[k] and bt[off[k] + (head[k] + c) % cap[k]] + deadline[k] < now:
            c += 1
        n[k] = c


@dataclass(frozen=True)
class Taken:
    """Requests taken out of the queues, grouped by key in key order, each key's in arrival order."""

    key: i8
    t: f8
    inp: f8
    out: f8
    rid: i8

    def __len__(self) -> int:
        return len(self.t)


class BatchQueue:
    """FIFO queues of deferred batch requests, one per key (module docstring)."""

    def __init__(self, zone: i8, model: i8, workload: i8, deadline_s: f8, capacity: int = 1024) -> None:
        self.zone, self.model, self.workload = zone, model, workload  # [Q] of each key
        self.deadline = np.asarray(deadline_s, dtype=np.float64)  # [Q]
        nq = len(zone)
        self.cap = np.full(nq, max(1, capacity), dtype=np.int64)
        self.off = np.concatenate([[0], np.cumsum(self.cap)[:-1]]).astype(np.int64)
        self.head = np.zeros(nq, np.int64)
        self.size = np.zeros(nq, np.int64)
        total = int(self.cap.sum())
        self.bt, self.bi, self.bo = np.zeros(total), np.zeros(total), np.zeros(total)
        self.br = np.zeros(total, np.int64)

    def __len__(self) -> int:
        return int(self.size.sum())

    def push(self, key: i8, t: f8, inp: f8, out: f8, rid: i8) -> None:
        """Queue requests (in arrival order) under their keys."""
        done = 0
        while done < len(key):
            done += _push(key[done:], t[done:], inp[done:], out[done:], rid[done:], self.off, self.cap,
                          self.head, self.size, self.bt, self.bi, self.bo, self.br)
            if done < len(key):
                self._grow()

    def take(self, n: i8) -> Taken:
        """Take the first ``n[k]`` (at most the queue) of each key k."""
        n = np.minimum(np.asarray(n, dtype=np.int64), self.size)
        m = int(n.sum())
        out = Taken(key=np.zeros(m, np.int64), t=np.zeros(m), inp=np.zeros(m), out=np.zeros(m),
                    rid=np.zeros(m, np.int64))
        if m:
            _pop(n, self.off, self.cap, self.head, self.size, self.bt, self.bi, self.bo, self.br,
                 out.t, out.inp, out.out, out.rid, out.key)
        return out

    def overdue(self, now: float) -> i8:
        """How many queued requests of each key are past their deadline at ``now`` (they lead their queue)."""
        n = np.zeros(len(self.size), np.int64)
        _overdue(now, self.deadline, self.off, self.cap, self.head, self.size, self.bt, n)
        return n

    def _grow(self) -> None:
        """Double every key's ring, keeping each queue's order."""
        nq = len(self.size)
        cap = self.cap * 2
        off = np.concatenate([[0], np.cumsum(cap)[:-1]]).astype(np.int64)
        total = int(cap.sum())
        bt, bi, bo, br = np.zeros(total), np.zeros(total), np.zeros(total), np.zeros(total, np.int64)
        for k in range(nq):  # a rare event: once per doubling
            idx = self.off[k] + (self.head[k] + np.arange(self.size[k])) % self.cap[k]
            dst = off[k] + np.arange(self.size[k])
            bt[dst], bi[dst], bo[dst], br[dst] = self.bt[idx], self.bi[idx], self.bo[idx], self.br[idx]
        self.cap, self.off, self.head = cap, off, np.zeros(nq, np.int64)
        self.bt, self.bi, self.bo, self.br = bt, bi, bo, br


class Deferral:
    """The deferred batch work of one simulation: its queues and their release into an engine (module docstring)."""

    def __init__(self, table: RouteTable, engine: Engine, zone: i8, model: i8, workload: i8, deadline_s: f8,
                 pref_site: i8, capacity: int = 1024) -> None:
        self.table, self.engine, self.pref_site = table, engine, pref_site
        self.queue = BatchQueue(zone, model, workload, deadline_s, capacity)
        n_z, n_m, n_w = len(table.zones), max(len(table.models), 1), engine.slo.shape[1]
        self.key_of = np.full((n_z, n_m, n_w), -1, dtype=np.int64)  # [zone, model, workload] -> queue key
        self.key_of[zone, model, workload] = np.arange(len(zone))
        # a key no backend may ever serve (residency, or its model nowhere) is rejected on arrival
        self.never = np.zeros(len(zone), dtype=np.int64)
        for q in range(len(zone)):
            if not table.candidates(int(zone[q]), int(model[q])):
                served = bool((table.model == model[q]).any())
                self.never[q] = RESIDENCY if served else NO_BACKEND
        self._due = np.zeros(len(table.backend_ids))

    def push(self, r: Requests) -> None:
        """Queue batch arrivals (in arrival order); those no backend may ever serve are rejected now."""
        key = self.key_of[r.zone, r.model, r.workload]
        never = self.never[key]
        bad = never > 0
        if bad.any():
            self._reject(r.take(np.flatnonzero(bad)), never[bad])
        ok = np.flatnonzero(~bad)
        self.queue.push(key[ok], r.t[ok], r.inp[ok], r.out[ok], r.rid[ok])

    def release(self, state: LoadState, now: float, until: float) -> None:
        """Hand queued requests to backends with room now (or a slot that frees before ``until``)."""
        q = self.queue
        if not q.size.any():
            return
        self.expire(now)  # a request past its deadline expires rather than being served late
        eng = self.engine
        kernels.due(now, until, eng.bheap, eng.boff, eng.bn, self._due)
        # the batch requests among those that end before the next release free slots batch work may reuse
        # (expected: the batch share of what is in flight); interactive completions stay interactive work's
        batch = eng.binflight
        reuse = np.floor(self._due * np.divide(batch, eng.inflight, out=np.zeros_like(batch), where=eng.inflight > 0))
        limit = state.batch_limit() + reuse
        if not (state.healthy & (limit > state.inflight)).any():
            return
        dec = decide_keys(self.table, replace(state, limit=limit), q.zone, q.model, q.size.astype(np.float64),
                          q.workload)
        taken = q.take(np.rint(dec.granted).astype(np.int64))
        if not len(taken):
            return
        backend = dec.backends(taken.key, rank(taken.key, len(q.size)))
        self._serve(taken, backend, np.zeros(len(taken), np.int64), np.full(len(taken), now))

    def expire(self, now: float) -> None:
        """Reject as ``expired`` every queued request whose deadline has passed."""
        n = self.queue.overdue(now)
        if n.any():
            taken = self.queue.take(n)
            self._serve(taken, np.full(len(taken), -1, np.int64), np.full(len(taken), EXPIRED, np.int64), taken.t)

    def finish(self, horizon_s: float) -> None:
        """At the horizon: overdue requests expire; the others are booked in flight."""
        self.expire(horizon_s)
        left = self.queue.take(self.queue.size.copy())
        eng = self.engine
        z, w = self.queue.zone[left.key], self.queue.workload[left.key]
        np.add.at(eng.cz[kernels.CZ_ARRIVALS], (z, w), 1)
        np.add.at(eng.cz[kernels.CZ_INFLIGHT], (z, w), 1)
        if eng.outcome.shape[0] > 0:
            eng.outcome[left.rid] = kernels.OUT_INFLIGHT

    def _reject(self, r: Requests, reason: i8) -> None:
        self.engine.serve(r.t, r.zone, r.workload, r.inp, r.out, r.rid, np.full(len(r), -1, np.int64),
                          reason.astype(np.int64), self.pref_site[r.zone, r.model])

    def _serve(self, taken: Taken, backend: i8, reason: i8, ready: f8) -> None:
        q = self.queue
        zone, model = q.zone[taken.key], q.model[taken.key]
        self.engine.serve(taken.t, zone, q.workload[taken.key], taken.inp, taken.out, taken.rid, backend, reason,
                          self.pref_site[zone, model], ready=ready)
