"""The routing decision core: one implementation, used by the simulator and by the gateway.

Sets
    B backends (:class:`sovcloud.routing.backends.Backends`: one per site x model x chip of a plan),
    Z zones (the world's demand zones), M models.
Policy, computed once as masks (:meth:`RouteTable.build`)
    allowed[o, b] = residency[o, site(b)]  (the scenario's rules for data of origin zone o)
    serves[m, b]  = (model(b) = m)
A pair that residency forbids is never a candidate and never scored: it is removed before any
score is computed, so no load, latency or health figure can ever make it win.
Live state per backend (:class:`LoadState`, owned and updated by the caller)
    healthy[b], inflight[b] (admitted, not finished), slots[b] (replicas x max batch),
    service_s[b] (time a request holds a slot), ttft_s[b] (recent TTFT), limit[b] (most in flight),
    batch_inflight[b] (of inflight, deferred batch work), headroom[b] (free slots kept per interactive
    request in flight), batch_fill (share of slots batch work may fill)
Serving discipline: interactive work has strict priority, batch work is deferred
    interactive requests are decided against limit[b] (they may queue at a backend);
    batch requests wait in their own queue (the simulator's, the gateway's) and are decided against
    batch_limit[b] = clip(floor(I[b] + batch_fill max(0, slots[b] - I[b] (1 + headroom[b]))), 0, slots[b]),
    I[b] = inflight[b] - batch_inflight[b] (interactive work in flight):
    they only take slots that are free and that interactive work does not hold in reserve, so interactive
    work never waits behind them for its reserve (:meth:`LoadState.for_batch`).
Decision for a request with data origin o, client zone z and model m
    C = {b : serves[m, b] and allowed[o, b]}        empty -> "no_backend" (m served nowhere) or "residency"
    C = {b in C : rtt_ms[z, b] <= budget_ms[w]}     when the request's workload w is known (the simulator):
                                                    empty -> "rtt_budget" (the planner leaves it unserved too)
    H = {b in C : healthy[b]}                       empty -> "unhealthy"
    A = {b in H : inflight[b] < limit[b]}           empty -> "saturated"
    wait_s[b]  = max(0, inflight[b] - slots[b] + 1) / slots[b] * service_s[b]   (FCFS over slots)
    score[b]   = rtt_ms[z, b] + 1000 (ttft_s[b] + wait_s[b])                   (expected ms to first token)
                 + off_plan_ms[w, z, b]                             (up to half w's TTFT target, by how little of
                                                                    (z, m, w) the plan sends to b's site: a zone
                                                                    keeps to the sites its plan sized for it)
    choose argmin_{b in A} score[b]  (ties: the lowest index, so decisions are deterministic)
:func:`route_many` decides a whole batch of requests against one state (vectorised over the distinct
(o, z, m) keys of the batch); :func:`route` is the same computation for one request, with an
optional exclusion mask for retries and failover (an excluded backend counts as unhealthy), which
therefore also stay inside C.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from sovcloud.errors import UnknownEntity
from sovcloud.routing.backends import Backends
from sovcloud.world.compiled import World

__all__ = [
    "EXPIRED",
    "NO_BACKEND",
    "OFF_PLAN_SHARE",
    "OK",
    "REASONS",
    "RESIDENCY",
    "RTT_BUDGET",
    "SATURATED",
    "UNHEALTHY",
    "Decision",
    "Decisions",
    "LoadState",
    "RouteTable",
    "route",
    "route_many",
]

OK, NO_BACKEND, RESIDENCY, UNHEALTHY, SATURATED, EXPIRED, RTT_BUDGET = 0, 1, 2, 3, 4, 5, 6
#: share of a workload's TTFT target a backend off the plan's flows costs: a zone spills off the sites its plan
#: sized for it once their expected wait is half its target (before its requests would miss it)
OFF_PLAN_SHARE = 0.5
#: reason code -> machine-readable name (an index of this tuple is what the arrays carry); ``expired`` is
#: deferred batch work whose deadline passed in its queue; ``rtt_budget``: every compliant backend is beyond the
#: request's workload RTT budget (the planner leaves such demand unserved too)
REASONS = ("ok", "no_backend", "residency", "unhealthy", "saturated", "expired", "rtt_budget")

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class RouteTable:
    """Static routing facts: the policy mask and round-trip times over (zone, backend)."""

    zones: tuple[str, ...]
    models: tuple[str, ...]
    backend_ids: tuple[str, ...]
    backend_site: tuple[str, ...]
    model: IntArray  # [b] model index of each backend
    allowed: BoolArray  # [o, b] residency: may data of origin zone o be processed at backend b
    rtt_ms: FloatArray  # [z, b]
    budget_ms: FloatArray = field(default_factory=lambda: np.zeros(0))  # [w] RTT budget of each workload (inf: none)
    # [w, z, b] extra ms of a backend by how little of (z, w)'s demand the plan sends there: OFF_PLAN_SHARE x the
    # TTFT target of w x (1 - served there / served at the zone's main site); 0 at the main site and where the plan
    # sends (z, m, w) nowhere; empty: no plan preference
    off_plan_ms: FloatArray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    _candidates: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, world: World, backends: Backends, flows: pd.DataFrame | None = None) -> RouteTable:
        """The table of ``backends``; with the plan's ``flows`` (zone, site, model, workload, period, served), a
        backend the plan does not send a zone's work to costs that workload's TTFT target (off_plan_ms)."""
        zones = tuple(world.zones)
        residency = world.ds.residency.transpose("zone", "site").values.astype(bool)
        rtt = world.ds.rtt_ms.transpose("zone", "site").values.astype(np.float64)
        site_of = backends.site
        budget = np.nan_to_num(world.ds.workload_rtt_budget_ms.values.astype(np.float64), nan=np.inf)
        return cls(
            zones=zones,
            models=backends.models,
            backend_ids=backends.ids,
            backend_site=tuple(backends.sites[i] for i in site_of),
            model=backends.model.copy(),
            allowed=residency[:, site_of].copy(),
            rtt_ms=rtt[:, site_of].copy(),
            budget_ms=budget,
            off_plan_ms=_off_plan(world, backends, flows) if flows is not None else np.zeros((0, 0, 0)),
        )

    def zone_index(self, zone: str) -> int:
        try:
            return self.zones.index(zone)
        except ValueError:
            raise UnknownEntity(f"unknown zone '{zone}'; zones are the scenario's demand zones, e.g. "
                                f"{', '.join(self.zones[:5])}") from None

    def model_index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise UnknownEntity(f"unknown model '{model}'; known: {', '.join(self.models)}") from None

    def candidates(self, origin: int, model: int) -> tuple[int, ...]:
        """Indices of C (policy only), computed once per (origin, model) and cached."""
        key = (origin, model)
        found = self._candidates.get(key)
        if found is None:
            found = tuple(int(b) for b in np.flatnonzero(self.compliant(origin, model)))
            self._candidates[key] = found
        return found

    def compliant(self, origin: int, model: int) -> BoolArray:
        """The candidate set C of an origin zone and a model (policy only, no live state)."""
        out: BoolArray = self.allowed[origin] & (self.model == model)
        return out


@dataclass
class LoadState:
    """Live state per backend; the caller (simulator or gateway) updates it between decisions."""

    healthy: BoolArray
    inflight: FloatArray
    slots: FloatArray
    service_s: FloatArray
    ttft_s: FloatArray
    limit: FloatArray
    batch_inflight: FloatArray | None = None  # of inflight, deferred batch work (None: none)
    headroom: FloatArray | None = None  # free slots kept per interactive request in flight (None: 0)
    batch_fill: float = 1.0  # share of slots batch work may fill

    @classmethod
    def initial(cls, backends: Backends, queue_factor: float = 1.0) -> LoadState:
        """Every backend healthy and idle; TTFT at the physics prefill; limit = slots x (1 + queue_factor)."""
        slots = backends.slots
        return cls(
            healthy=np.ones(len(backends), dtype=bool),
            inflight=np.zeros(len(backends)),
            slots=slots,
            service_s=backends.service_s(backends.max_batch.astype(np.float64)),
            ttft_s=backends.prefill_s + backends.tpot_s(1.0),
            limit=slots * (1.0 + queue_factor),
            batch_inflight=np.zeros(len(backends)),
            headroom=backends.headroom.copy(),
            batch_fill=backends.batch_fill,
        )

    def copy(self) -> LoadState:
        return replace(self, healthy=self.healthy.copy(), inflight=self.inflight.copy(), slots=self.slots.copy(),
                       service_s=self.service_s.copy(), ttft_s=self.ttft_s.copy(), limit=self.limit.copy(),
                       batch_inflight=None if self.batch_inflight is None else self.batch_inflight.copy(),
                       headroom=None if self.headroom is None else self.headroom.copy())

    def batch_limit(self) -> FloatArray:
        """Most requests in flight at which a backend still takes deferred batch work (module docstring)."""
        batch = np.zeros_like(self.inflight) if self.batch_inflight is None else self.batch_inflight
        headroom = np.zeros_like(self.inflight) if self.headroom is None else self.headroom
        interactive = np.maximum(self.inflight - batch, 0.0)
        spare = np.maximum(self.slots - interactive * (1.0 + headroom), 0.0)
        out: FloatArray = np.clip(np.floor(interactive + self.batch_fill * spare + 1e-9), 0.0, self.slots)
        return out

    def for_batch(self) -> LoadState:
        """The state batch work is routed against: the same backends, admitting only up to :meth:`batch_limit`."""
        return replace(self, limit=self.batch_limit())

    def wait_s(self) -> FloatArray:
        """Expected queueing delay per backend from in-flight load (0 while a slot is free)."""
        slots = np.maximum(self.slots, 1.0)
        out: FloatArray = np.maximum(self.inflight - self.slots + 1.0, 0.0) / slots * self.service_s
        return out


@dataclass(frozen=True)
class Decisions:
    """One entry per request: backend index (-1 if none), reason code, expected ms to first token."""

    backend: IntArray
    reason: IntArray
    expected_ms: FloatArray


@dataclass(frozen=True)
class Decision:
    backend: int
    reason: str
    expected_ms: float
    backend_id: str | None
    site: str | None


def _off_plan(world: World, backends: Backends, flows: pd.DataFrame) -> FloatArray:
    """``off_plan_ms[w, z, b]`` (see RouteTable) from the plan's flows of the backends' period."""
    ds = world.ds
    wl, zones = [str(w) for w in ds.workload.values], list(world.zones)
    W, Z, B = len(wl), len(zones), len(backends)
    f = flows[(flows["period"] == backends.period) & (flows["served_mtok_day"] > 0)]
    planned = np.zeros((W, Z, len(backends.sites), len(backends.models)))  # Mtok/day the plan serves there
    w_i = {w: i for i, w in enumerate(wl)}
    z_i = {z: i for i, z in enumerate(zones)}
    s_i = {s: i for i, s in enumerate(backends.sites)}
    m_i = {m: i for i, m in enumerate(backends.models)}
    keep = f["workload"].isin(w_i) & f["zone"].isin(z_i) & f["site"].isin(s_i) & f["model"].isin(m_i)
    f = f[keep]
    np.add.at(planned, (f["workload"].map(w_i).to_numpy(), f["zone"].map(z_i).to_numpy(),
                        f["site"].map(s_i).to_numpy(), f["model"].map(m_i).to_numpy()),
              f["served_mtok_day"].to_numpy(dtype=np.float64))
    at_b = planned[:, :, backends.site, backends.model]  # [w, z, b]
    main: FloatArray = np.asarray(planned.max(axis=2))[:, :, backends.model]  # [w, z, b]: the zone's main site
    share = np.divide(at_b, main, out=np.zeros_like(at_b), where=main > 0)
    ttft = np.nan_to_num(ds.workload_ttft_s.values.astype(np.float64), nan=0.0) * 1000.0
    off = OFF_PLAN_SHARE * ttft[:, None, None] * (1.0 - share)
    out: FloatArray = np.where(main > 0, off, 0.0) if B else np.zeros((W, Z, 0))
    return out


def _within(table: RouteTable, client: IntArray, workload: IntArray | None) -> BoolArray | bool:
    """[K, B]: the backend is within the request's workload RTT budget (True where the workload is not known)."""
    if workload is None or not len(table.budget_ms):
        return True
    budget = np.where(workload >= 0, table.budget_ms[np.maximum(workload, 0)], np.inf)
    out: BoolArray = table.rtt_ms[client] <= budget[:, None]
    return out


def _penalty(table: RouteTable, client: IntArray, workload: IntArray | None) -> FloatArray | float:
    """Per [K, B]: the off-plan cost of a backend (0 without the plan's flows or a known workload)."""
    if workload is None or not table.off_plan_ms.size:
        return 0.0
    out: FloatArray = np.where((workload >= 0)[:, None], table.off_plan_ms[np.maximum(workload, 0), client], 0.0)
    return out


def _decide(table: RouteTable, state: LoadState, origin: IntArray, client: IntArray,
            model: IntArray, workload: IntArray | None = None) -> tuple[IntArray, IntArray, FloatArray]:
    """The decision of the module docstring for K keys at once ([K] arrays in, [K] arrays out)."""
    serves = table.model[None, :] == model[:, None]  # [K, B]
    allowed = serves & table.allowed[origin]
    compliant = allowed & _within(table, client, workload)
    healthy = compliant & state.healthy[None, :]
    avail = healthy & (state.inflight < state.limit)[None, :]
    score = table.rtt_ms[client] + 1000.0 * (state.ttft_s + state.wait_s())[None, :] \
        + _penalty(table, client, workload)
    score = np.where(avail, score, np.inf)
    best = np.argmin(score, axis=1)
    expected = score[np.arange(len(best)), best]
    ok = np.isfinite(expected)
    reason = np.select(
        [ok, healthy.any(1), compliant.any(1), allowed.any(1), serves.any(1)],
        [OK, SATURATED, UNHEALTHY, RTT_BUDGET, RESIDENCY],
        default=NO_BACKEND,
    )
    return np.where(ok, best, -1).astype(np.int64), reason.astype(np.int64), expected


def route_many(table: RouteTable, state: LoadState, origin: IntArray, client: IntArray,
               model: IntArray, workload: IntArray | None = None) -> Decisions:
    """Decide every request of a batch against one state (requests with equal keys decide alike)."""
    o = np.asarray(origin, dtype=np.int64)
    z = np.asarray(client, dtype=np.int64)
    m = np.asarray(model, dtype=np.int64)
    if len(o) == 0:
        return Decisions(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    Z, M = len(table.zones), max(len(table.models), 1)
    w = np.zeros_like(o) if workload is None else np.asarray(workload, dtype=np.int64)
    W = max(len(table.budget_ms), int(w.max()) + 1, 1)
    keys = ((o * Z + z) * M + m) * W + w
    uniq, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    b, r, e = _decide(table, state, uniq // (Z * M * W), (uniq // (M * W)) % Z, (uniq // W) % M,
                      None if workload is None else uniq % W)
    return Decisions(backend=b[inverse], reason=r[inverse], expected_ms=e[inverse])


def route(table: RouteTable, state: LoadState, origin: int, client: int, model: int,
          exclude: BoolArray | None = None, workload: int = -1) -> Decision:
    """Decide one request; ``exclude`` marks backends already tried (retries stay inside C).

    The scalar form of :func:`route_many`'s computation over the cached candidate list of (origin,
    model), for the gateway's hot path (a few microseconds instead of a dozen array operations); the
    tests check that both give the same backend and reason for every request.
    """
    rtt = table.rtt_ms[client]
    budget = float(table.budget_ms[workload]) if 0 <= workload < len(table.budget_ms) else np.inf
    off = table.off_plan_ms[workload, client] if table.off_plan_ms.size and workload >= 0 else None
    best, best_score, any_healthy, any_within = -1, np.inf, False, False
    for b in table.candidates(origin, model):
        if rtt[b] > budget:
            continue
        any_within = True
        if not state.healthy[b] or (exclude is not None and exclude[b]):
            continue
        any_healthy = True
        inflight, slots = state.inflight[b], state.slots[b]
        if inflight >= state.limit[b]:
            continue
        wait = max(inflight - slots + 1.0, 0.0) / max(slots, 1.0) * state.service_s[b]
        score = rtt[b] + 1000.0 * (state.ttft_s[b] + wait) + (float(off[b]) if off is not None else 0.0)
        if score < best_score:
            best, best_score = b, score
    if best >= 0:
        return Decision(backend=best, reason="ok", expected_ms=float(best_score),
                        backend_id=table.backend_ids[best], site=table.backend_site[best])
    if any_healthy:
        code = SATURATED
    elif any_within:
        code = UNHEALTHY
    elif table.candidates(origin, model):
        code = RTT_BUDGET
    else:
        code = RESIDENCY if bool((table.model == model).any()) else NO_BACKEND
    return Decision(backend=-1, reason=REASONS[code], expected_ms=float("inf"), backend_id=None, site=None)
