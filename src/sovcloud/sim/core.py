"""The serving engine of the simulator and the queueing theory it is checked against.

:class:`Engine` holds the state of every backend's FCFS multi-server queue and the global pending
heap, and calls the compiled loops of :mod:`sovcloud.sim.kernels` (the model and formulas are there).
It counts, per zone and workload and per backend and workload, every request that arrives: served
(and whether it met its SLO), rejected (by reason), lost to a shock, or still in flight at the end;
hourly per backend served, lost and busy slot-seconds; latency histograms (TTFT, TPOT, end to end);
and the (zone, site) pairs requests were served at, for the independent residency check.

Reference results (tests and ``benchmarks/sim_speed.py`` compare the engine with them)::

    Erlang C, M/M/c with load a = lambda / mu, rho = a / c < 1:
        C(c, a) = (a^c / c!) / (1 - rho) / (sum_{k<c} a^k / k! + (a^c / c!) / (1 - rho))
        W_q     = C(c, a) / (c mu - lambda)
    Pollaczek-Khinchine, M/D/1 with service time D, rho = lambda D < 1:
        W_q     = rho D / (2 (1 - rho))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sovcloud.routing.router import REASONS
from sovcloud.sim import kernels as k

__all__ = ["Engine", "erlang_c_wait", "fcfs_starts", "pollaczek_khinchine_wait"]

f8 = NDArray[np.float64]
i8 = NDArray[np.int64]


def erlang_c_wait(arrival_rate: float, service_s: float, servers: int) -> float:
    """Mean wait in queue of M/M/c (Erlang C); inf when the queue is unstable."""
    a = arrival_rate * service_s
    rho = a / servers
    if rho >= 1.0:
        return math.inf
    term, total = 1.0, 1.0  # a^k / k!, summed for k < c
    for kk in range(1, servers):
        term *= a / kk
        total += term
    top = term * a / servers / (1.0 - rho)
    c_prob = top / (total + top)
    return c_prob / (servers / service_s - arrival_rate)


def pollaczek_khinchine_wait(arrival_rate: float, service_s: float) -> float:
    """Mean wait in queue of M/D/1 (Pollaczek-Khinchine with zero service variance)."""
    rho = arrival_rate * service_s
    return math.inf if rho >= 1.0 else rho * service_s / (2.0 * (1.0 - rho))


@dataclass
class Engine:
    """Queues and counters of B backends over Z zones, W workloads, S sites and the simulated hours."""

    horizon_s: float
    bpar: f8  # [5, B] effective replicas, prefill tokens/s, tpot0, tpot1, max batch
    cap: i8  # [B] slots now (power cuts lower it)
    b_site: i8
    rtt_s: f8  # [Z, B]
    slo: f8  # [4, W] ttft, tpot, rtt, e2e limits (s)
    bheap: f8
    boff: i8
    bn: i8
    inflight: f8  # [B] admitted, not finished: the router's LoadState.inflight is this very array
    binflight: f8  # [B] of which batch work: the router's LoadState.batch_inflight is this very array
    wbatch: i8  # [W] 1 for a batch workload
    pool_f: f8
    pool_i: i8
    hk: f8  # pending requests: 4-ary min-heap of end times and their pool entries
    hi: i8
    free: i8
    sc: i8  # [pending heap size, free pool entries]
    cz: i8  # [5, Z, W] arrivals, served, met, lost, in flight at the end
    rej: i8  # [Z, W, reasons]
    cb: i8  # [5, B, W] admitted, served, met, lost, in flight at the end
    hb: f8  # [3, hours, B] served, lost, busy slot-seconds
    hrej: i8  # [hours, S + 1, W] rejections by preferred site (S: none)
    routed: i8  # [Z, S] admitted requests per (origin zone, serving site)
    hz: i8  # [Z, W, 3, bins / ZONE_COARSEN] TTFT, TPOT, E2E histograms
    hbk: i8  # [B, W, 3, bins]
    outcome: NDArray[np.int8]  # per tracked request id (empty when not tracking)

    @classmethod
    def create(cls, *, slots: i8, replicas: f8, prefill_tokens_per_s: f8, tpot0_s: f8, tpot1_s: f8,
               max_batch: f8, b_site: i8, rtt_s: f8, slo: f8, n_sites: int, horizon_s: float,
               pool_size: int, track: int = 0, batch_workloads: NDArray[np.bool_] | None = None) -> Engine:
        """A fresh, idle engine; ``pool_size``: initial room for requests in flight (it grows), ``track``: ids."""
        slots = np.maximum(np.asarray(slots, dtype=np.int64), 1)
        nb, (nz, nw) = len(slots), (rtt_s.shape[0], slo.shape[1])
        hours = max(1, math.ceil(horizon_s / 3600.0 - 1e-9))
        boff = np.zeros(nb + 1, dtype=np.int64)
        boff[1:] = np.cumsum(slots)
        bins = k.HIST_BINS
        return cls(
            horizon_s=float(horizon_s),
            bpar=np.vstack([replicas, prefill_tokens_per_s, tpot0_s, tpot1_s, max_batch]).astype(np.float64),
            cap=slots.copy(), b_site=np.asarray(b_site, dtype=np.int64), rtt_s=np.ascontiguousarray(rtt_s, np.float64),
            slo=np.ascontiguousarray(slo, np.float64), bheap=np.zeros(int(boff[-1])), boff=boff,
            bn=np.zeros(nb, np.int64), inflight=np.zeros(nb), binflight=np.zeros(nb),
            wbatch=(np.zeros(nw, np.int64) if batch_workloads is None
                    else np.asarray(batch_workloads, dtype=np.int64)), pool_f=np.zeros((pool_size, 5)),
            pool_i=np.zeros((pool_size, 5), np.int64), hk=np.zeros(pool_size), hi=np.zeros(pool_size, np.int64),
            free=np.arange(pool_size - 1, -1, -1, dtype=np.int64), sc=np.array([0, pool_size], np.int64),
            cz=np.zeros((5, nz, nw), np.int64), rej=np.zeros((nz, nw, len(REASONS)), np.int64),
            cb=np.zeros((5, nb, nw), np.int64), hb=np.zeros((3, hours, nb)),
            hrej=np.zeros((hours, n_sites + 1, nw), np.int64), routed=np.zeros((nz, n_sites), np.int64),
            hz=np.zeros((nz, nw, 3, bins // k.ZONE_COARSEN), np.int64), hbk=np.zeros((nb, nw, 3, bins), np.int64),
            outcome=np.zeros(track, np.int8),
        )

    @property
    def nominal_slots(self) -> i8:
        out: i8 = np.diff(self.boff)
        return out

    def advance(self, until: float) -> None:
        """Complete every request that ends at or before ``until``."""
        k.advance(until, self.pool_f, self.pool_i, self.hk, self.hi, self.free, self.sc, self.inflight,
                  self.binflight, self.wbatch, self.cz, self.cb, self.hb, self.hz, self.hbk, self.outcome)

    def serve(self, t: f8, zone: i8, workload: i8, inp: f8, out: f8, rid: i8, backend: i8, reason: i8, pref: i8,
              starts: f8 | None = None, ready: f8 | None = None) -> None:
        """Serve requests sorted by ``ready`` (default: their arrival ``t``) with their decisions
        (backend -1: rejected for ``reason``)."""
        buf = np.zeros(0) if starts is None else starts
        rd = t if ready is None else ready
        done, n = 0, len(t)
        while True:
            done += k.serve(t[done:], rd[done:], zone[done:], workload[done:], inp[done:], out[done:], rid[done:],
                            backend[done:], reason[done:], pref[done:], self.bpar, self.cap, self.b_site, self.rtt_s,
                            self.slo, self.horizon_s, self.bheap, self.boff, self.bn, self.inflight, self.binflight,
                            self.wbatch, self.pool_f,
                            self.pool_i, self.hk, self.hi, self.free, self.sc, self.cz, self.rej, self.cb, self.hb,
                            self.hrej, self.routed, self.hz, self.hbk, self.outcome, buf[done:])
            if done >= n:
                return
            self._grow()

    def _grow(self) -> None:
        """Double the pool of pending requests (its heap and free list follow)."""
        size = self.pool_f.shape[0]
        self.pool_f = np.concatenate([self.pool_f, np.zeros_like(self.pool_f)])
        self.pool_i = np.concatenate([self.pool_i, np.zeros_like(self.pool_i)])
        self.hk = np.concatenate([self.hk, np.zeros(size)])
        self.hi = np.concatenate([self.hi, np.zeros(size, np.int64)])
        free = np.zeros(2 * size, np.int64)
        n_free = int(self.sc[1])
        free[:n_free] = self.free[:n_free]
        free[n_free:n_free + size] = np.arange(2 * size - 1, size - 1, -1)
        self.free = free
        self.sc[1] = n_free + size

    def fail(self, failed: NDArray[np.bool_], at: float) -> None:
        """Backends ``failed`` go down at ``at``: their pending requests are lost, their queues emptied."""
        self.advance(at)
        k.fail(failed, at, self.horizon_s, self.bn, self.inflight, self.binflight, self.pool_f, self.pool_i, self.hk,
               self.hi,
               self.free, self.sc, self.cz, self.cb, self.hb, self.outcome)

    def set_capacity(self, slots: i8, replicas: f8) -> None:
        """Slots and effective replicas from now on (a power cut drains gracefully, see simkernels)."""
        self.cap[:] = np.clip(slots, 1, self.nominal_slots)
        self.bpar[0] = replicas

    def finish(self) -> None:
        """Complete what ends by the horizon; book the rest as in flight."""
        self.advance(self.horizon_s)
        k.finish(self.pool_i, self.hi, self.sc, self.cz, self.cb, self.outcome)


def fcfs_starts(arrivals: f8, service_s: f8, servers: int, chunk: int = 16384) -> f8:
    """Start times of an FCFS queue with ``servers`` identical servers, computed by the engine itself.

    One backend of ``servers`` replicas of batch 1 whose service time is ``service_s`` exactly
    (prefill zero, TPOT 1 s, "output tokens" = the service time), fed in chunks of ``chunk`` arrivals
    with completions booked in between, as the simulator does: the path that tests compare with
    Erlang C and Pollaczek-Khinchine, and that ``benchmarks/sim_speed.py`` times against SimPy.
    """
    n = len(arrivals)
    arrivals = np.ascontiguousarray(arrivals, np.float64)
    service_s = np.ascontiguousarray(service_s, np.float64)
    one = np.ones(1)
    eng = Engine.create(slots=np.array([servers]), replicas=np.array([float(servers)]),
                        prefill_tokens_per_s=np.array([1.0]), tpot0_s=one, tpot1_s=np.zeros(1), max_batch=one,
                        b_site=np.zeros(1, np.int64), rtt_s=np.zeros((1, 1)),
                        slo=np.full((4, 1), np.inf), n_sites=1, horizon_s=float(arrivals[-1]) + 1.0,
                        pool_size=4 * chunk)
    starts = np.zeros(n)
    zeros = np.zeros(n, np.int64)
    none = zeros - 1
    rid = np.arange(n, dtype=np.int64)
    inp = np.zeros(n)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        eng.advance(float(arrivals[a]))
        eng.serve(arrivals[a:b], zeros[a:b], zeros[a:b], inp[a:b], service_s[a:b], rid[a:b], zeros[a:b],
                  zeros[a:b], none[a:b], starts[a:b])
    eng.finish()
    return starts
