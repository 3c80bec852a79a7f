"""Routing a tick of simulated arrivals with the gateway's decision core, without herding.

The simulator routes in ticks (default 1 s of simulated time): all arrivals of a tick are decided
by :func:`sovcloud.routing.router.route_many` against the load state at the tick's start (the in-flight
counts of the engine). Requests of one key (zone, model, workload; origin = client = the zone) decide alike,
so one call would send all of a key's requests to the same backend, while a gateway deciding one
request at a time sees its own admissions. So a tick is decided in rounds over its distinct keys,
each a ``route_many`` call on the keys with requests still undecided, with the in-flight counts
raised by what earlier rounds admitted:

    room[b]  = free slots of b                        if b has a free slot
             = max(1, ceil(slots[b] * 4^round / 16))  otherwise (its queue grows in steps, x4 per round)
    room[b]  = min(room[b], ceil(limit[b] - inflight[b]))
    the keys that chose b share room[b] in proportion to their undecided requests (remainders to the
    first keys); a key's requests are admitted in arrival order; the rest go to the next round

From round ``FINE_ROUNDS`` (4) on, room[b] = ceil(limit[b] - inflight[b]): the rest of the tick fills
backends up to their limits. A key the router rejects (no backend, residency, unhealthy, saturated)
has its undecided requests rejected with that reason. Every round admits at least one request; one
round suffices when every chosen backend has room. When the whole fleet is near its limits, a key's
overflow walks its candidates one backend per round. As a safeguard, requests still undecided after
``MAX_ROUNDS`` (32) are rejected as ``saturated`` (conservative: a gateway deciding one at a time
might still find a free place) and counted (``routing_cut`` in summary.json). Within a share a key's
requests herd onto one backend: the price of deciding in batches (smaller ``--tick``, less herding).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from sovcloud.routing.router import NO_BACKEND, OK, SATURATED, LoadState, RouteTable, route_many

__all__ = ["FINE_ROUNDS", "MAX_ROUNDS", "KeyDecisions", "decide_keys", "decide_tick", "preferred_backend", "rank"]

#: rounds with small quotas; later rounds admit up to each backend's limit
FINE_ROUNDS = 4
#: requests still undecided after this many rounds are rejected as saturated
MAX_ROUNDS = 32

i8 = NDArray[np.int64]
f8 = NDArray[np.float64]


def rank(group: i8, n_groups: int) -> i8:
    """Position of each element among the elements of its group, in order (0, 1, ...)."""
    order = np.argsort(group.astype(np.int32 if n_groups > 32000 else np.int16), kind="stable")
    counts = np.bincount(group, minlength=n_groups)
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = np.arange(len(group)) - (np.cumsum(counts) - counts)[group[order]]
    return rank


def _share(bo: i8, want: f8, room: f8, n_b: int) -> f8:
    """Requests granted to each key (``want`` of them chose backend ``bo``) within each backend's room."""
    demand = np.bincount(bo, weights=want, minlength=n_b)
    if np.all(demand <= room):
        return want
    ratio = np.minimum(1.0, np.divide(room, demand, out=np.ones(n_b), where=demand > 0))
    grant = np.floor(want * ratio[bo])
    left = room - np.bincount(bo, weights=grant, minlength=n_b)
    extra = (rank(bo, n_b) < left[bo]) & (grant < want)
    out: f8 = grant + extra
    return out


@dataclass(frozen=True)
class KeyDecisions:
    """Decisions of a tick per key: who got which backend, in rounds (see module docstring)."""

    segments: list[tuple[f8, f8, i8]]  # per round: [lo, hi) of each key's requests, and its backend (-1: none)
    reason: i8  # [K] reason code of a key's undecided requests
    granted: f8  # [K] requests of each key admitted
    cut: int  # requests still undecided after MAX_ROUNDS rounds

    def backends(self, key: i8, pos: i8) -> i8:
        """Backend of each request given its key and its position among its key's requests (-1: none)."""
        backend = np.full(len(key), -1, dtype=np.int64)
        for start, hi, b_of_key in self.segments:
            sel = (pos >= start[key]) & (pos < hi[key])
            backend[sel] = b_of_key[key[sel]]
        return backend


def decide_keys(table: RouteTable, state: LoadState, kz: i8, km: i8, counts: f8,
                kw: i8 | None = None) -> KeyDecisions:
    """Decide ``counts[k]`` requests of each key (zone ``kz[k]``, model ``km[k]``, workload ``kw[k]``) in rounds
    against ``state``."""
    n_b = len(table.backend_ids)
    remaining = np.asarray(counts, dtype=np.float64).copy()
    reason_k = np.full(len(kz), OK, dtype=np.int64)
    lo = np.zeros(len(kz))  # requests of each key decided so far (they are its first ones)
    segments: list[tuple[f8, f8, i8]] = []
    extra = np.zeros(n_b)
    active = np.flatnonzero(remaining > 0)
    cut, rnd = 0, 0
    while len(active):
        if rnd == MAX_ROUNDS:
            reason_k[active] = SATURATED
            cut = int(remaining[active].sum())
            break
        inflight = state.inflight + extra
        d = route_many(table, replace(state, inflight=inflight), kz[active], kz[active], km[active],
                       None if kw is None else kw[active])
        rejected = d.backend < 0
        reason_k[active[rejected]] = d.reason[rejected]
        act, bo = active[~rejected], d.backend[~rejected]
        if len(act) == 0:
            break
        room = np.ceil(state.limit - inflight)
        if rnd < FINE_ROUNDS:
            free = np.floor(state.slots - inflight)
            step = np.maximum(1.0, np.ceil(state.slots * 4.0 ** rnd / 16.0))
            room = np.minimum(np.where(free >= 1.0, free, step), room)
        grant = _share(bo, remaining[act], room, n_b)
        hi = np.zeros(len(kz))
        start = lo.copy()
        hi[act] = lo[act] + grant
        segments.append((start, hi, np.bincount(act, weights=bo + 1, minlength=len(kz)).astype(np.int64) - 1))
        lo[act] += grant
        remaining[act] -= grant
        extra += np.bincount(bo, weights=grant, minlength=n_b)
        active = act[remaining[act] > 0]
        rnd += 1
    return KeyDecisions(segments=segments, reason=reason_k, granted=lo, cut=cut)


def decide_tick(table: RouteTable, state: LoadState, zone: i8, model: i8,
                workload: i8 | None = None) -> tuple[i8, i8, int]:
    """(backend, reason) of each request of a tick (in arrival order), and how many were cut after
    ``MAX_ROUNDS`` rounds (rejected as saturated)."""
    n, n_b = len(zone), len(table.backend_ids)
    if n_b == 0:
        return np.full(n, -1, dtype=np.int64), np.full(n, NO_BACKEND, dtype=np.int64), 0
    w = np.zeros_like(zone) if workload is None else workload
    n_m, n_w = max(len(table.models), 1), max(len(table.budget_ms), int(w.max(initial=0)) + 1, 1)
    keys, inv, counts = np.unique((zone * n_m + model) * n_w + w, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    dec = decide_keys(table, state, keys // (n_m * n_w), (keys // n_w) % n_m, counts.astype(np.float64),
                      None if workload is None else keys % n_w)
    backend = dec.backends(inv, rank(inv, len(keys)))
    reason = np.where(backend >= 0, OK, dec.reason[inv])
    return backend, reason.astype(np.int64), dec.cut


def preferred_backend(table: RouteTable, state: LoadState) -> i8:
    """``[zone, model]`` backend the router picks on an idle, healthy fleet (-1: none allowed).

    Rejections are booked against the site of this backend in the timeline (a residency rejection
    has none).
    """
    n_z, n_m = len(table.zones), max(len(table.models), 1)
    if len(table.backend_ids) == 0:
        return np.full((n_z, n_m), -1, dtype=np.int64)
    idle = replace(state, healthy=np.ones_like(state.healthy), inflight=np.zeros_like(state.inflight))
    zones = np.repeat(np.arange(n_z), n_m)
    models = np.tile(np.arange(n_m), n_z)
    d = route_many(table, idle, zones, zones, models)
    out: i8 = d.backend.reshape(n_z, n_m)
    return out
