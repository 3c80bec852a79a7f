"""``sovcloud simulate``: replay traffic through a plan hour by hour, under shocks, before anyone spends.

Pipeline::

    plan.json --load_plan/backends_for--> backends of one period (site x model x chip: replicas, physics)
    traffic   --sim/traffic.py--> requests (t, zone, model, workload, prompt, completion), sorted, in chunks
    every tick (default 1 s of simulated time):
        shocks that start or end now change the fleet (sim/shocks.py)
        engine.advance(t)                  completions up to t free slots; LoadState.inflight follows
        every batch tick (default 5 s)     deferred batch work expires or is released into spare capacity
                                           (sim/deferred.py; batch arrivals join their queues)
        simroute.decide_tick(...)          the gateway's router (router.route_many) in rounds, interactive work
        engine.serve(...)                  FCFS multi-server queues, continuous batching (sim/kernels.py)
    engine.finish()                        what ends by the horizon is served, the rest in flight
    sim/metrics.py                         summary.json, Parquet tables, residency check, energy

Sampling (``sample`` = F in (0, 1]): arrivals are thinned to F of the demand (or a trace is taken as
an F-sample of it) and every backend keeps ``ceil(F x replicas x max_batch)`` slots and
``F x replicas`` replicas for the batch size, so each backend runs at the same utilisation as at
full scale. Fewer servers at the same utilisation wait at least as long (Erlang C grows as c
shrinks at fixed rho), so sampled waits are conservative; rounding slots up adds at most one slot.
Counts (arrivals, served, ...) are simulated requests; divide by F for full scale. Latencies, SLO
attainment and utilisation are scale free; energy, water, carbon and cost are at full scale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from sovcloud.errors import PlanFileError, UsageError
from sovcloud.routing.backends import Backends, PlanDocument, backends_for, load_plan
from sovcloud.routing.router import LoadState, RouteTable
from sovcloud.scenario.loader import load_scenario
from sovcloud.scenario.shocks import parse_shock
from sovcloud.sim.core import Engine
from sovcloud.sim.deferred import Deferral
from sovcloud.sim.route import decide_tick, preferred_backend
from sovcloud.sim.shocks import ShockTimeline, parse_sim_shock
from sovcloud.sim.traces import Trace, load_trace
from sovcloud.sim.traffic import DemandRates, Requests, TraceSpread, spread_trace
from sovcloud.world.compiled import World
from sovcloud.world.compiled import compile as compile_world

__all__ = ["REQUEST_BUDGET", "SimConfig", "SimRun", "simulate"]

#: the automatic sample simulates at most this many requests per simulated day (1.2e8: the default plan's
#: 2027 demand at sample 0.01, which keeps a one-replica backend at 5 slots)
REQUEST_BUDGET = 1.2e8


@dataclass(frozen=True)
class SimConfig:
    """Options of one simulation (the CLI's flags)."""

    trace: str | None = None  # bundled name or path; None: synthetic traffic
    hours: float | None = None  # default 24 (synthetic) or the trace's span rounded up to whole hours
    sample: float | None = None  # None: automatic (see module docstring)
    seed: int = 0
    tick_s: float = 1.0
    queue_factor: float = 1.0
    burstiness: float = 0.25
    start_hour: int | None = None  # UTC hour at t = 0; default 0, or the trace's first hour
    trace_scale: float = 1.0
    shocks: tuple[str, ...] = ()
    period: int | None = None
    chunk_s: float = 600.0
    batch_tick_s: float = 5.0  # deferred batch work is released every this many simulated seconds

    def check(self) -> None:
        h, f, st = self.hours, self.sample, self.start_hour
        for name, value, ok, want in (
                ("--hours", h, h is None or 0 < h <= 24 * 31, "0 < H <= 744"),
                ("--sample", f, f is None or 0 < f <= 1, "0 < F <= 1"),
                ("--tick", self.tick_s, 0 < self.tick_s <= 60, "0 < seconds <= 60"),
                ("--batch-tick", self.batch_tick_s, 0 < self.batch_tick_s <= 600, "0 < seconds <= 600"),
                ("--queue-factor", self.queue_factor, 0 <= self.queue_factor <= 100, "0 <= Q <= 100"),
                ("--burstiness", self.burstiness, 0 <= self.burstiness <= 10, "0 <= CV <= 10"),
                ("--trace-scale", self.trace_scale, 0 < self.trace_scale <= 1e6, "0 < S <= 1e6"),
                ("--start-hour", st, st is None or 0 <= st <= 23, "a UTC hour 0..23")):
            if not ok:
                raise UsageError(f"{name} {value}: out of range; fix: give {want}")


@dataclass
class SimRun:
    """Everything a finished simulation knows; :mod:`sovcloud.sim.metrics` turns it into outputs."""

    plan_path: Path
    doc: PlanDocument
    world: World
    backends: Backends
    table: RouteTable
    config: SimConfig
    traffic: str
    sample: float
    horizon_s: float
    start_hour: int
    timeline: ShockTimeline
    engine: Engine
    slots: NDArray[np.int64]  # sampled nominal slots per backend
    capacity_s: NDArray[np.float64]  # [hour, backend] slot-seconds available (shocks applied)
    spread: TraceSpread | None = None
    trace: Trace | None = None
    wall_s: float = 0.0
    requests: int = 0
    routing_cut: int = 0  # requests rejected as saturated after simroute.MAX_ROUNDS rounds


def _slo(world: World) -> NDArray[np.float64]:
    ds = world.ds
    rows = [ds.workload_ttft_s.values, ds.workload_tpot_s.values, ds.workload_rtt_budget_ms.values / 1000.0,
            ds.workload_deadline_h.values * 3600.0]
    return np.nan_to_num(np.array(rows, dtype=np.float64), nan=np.inf)


def _integrate(cap_s: NDArray[np.float64], vec: NDArray[np.float64], a: float, e: float) -> None:
    h = int(a // 3600.0)
    while a < e and h < cap_s.shape[0]:
        top = min(e, (h + 1) * 3600.0)
        cap_s[h] += vec * (top - a)
        a, h = top, h + 1


class _Fleet:
    """Applies the shock timeline to the engine and the router's state; integrates capacity."""

    def __init__(self, run: SimRun, state: LoadState) -> None:
        self.run, self.state = run, state
        self.replicas = run.backends.replicas * run.sample
        self.vec = np.zeros(len(run.backends))
        self.last = 0.0

    def apply(self, t: float) -> None:
        run, st = self.run, self.state
        healthy, power = run.timeline.backends_at(t)
        _integrate(run.capacity_s, self.vec, self.last, t)
        down = st.healthy & ~healthy
        if down.any():
            run.engine.fail(down, t)
        slots = np.maximum(1, np.ceil(run.slots * power - 1e-9)).astype(np.int64)
        run.engine.set_capacity(slots, self.replicas * power)
        st.healthy[:] = healthy
        st.slots[:] = slots
        st.limit[:] = slots * (1.0 + run.config.queue_factor)
        self.vec = np.where(healthy, slots, 0).astype(np.float64)
        self.last = t

    def close(self) -> None:
        _integrate(self.run.capacity_s, self.vec, self.last, self.run.horizon_s)


def _setup(plan: Path | str, config: SimConfig, rng: np.random.Generator) -> tuple[SimRun, DemandRates, LoadState]:
    config.check()
    doc = load_plan(plan)
    world = _plan_world(Path(plan), doc)
    period = doc.periods[-1] if config.period is None else config.period
    backends = backends_for(doc, world, period)
    table = RouteTable.build(world, backends, _plan_flows(Path(plan)))
    rates = DemandRates.from_world(world, period)
    timeline = ShockTimeline.build([parse_sim_shock(s) for s in config.shocks], world, backends)
    trace = load_trace(config.trace) if config.trace is not None else None
    if trace is not None:
        hours = config.hours or max(1.0, math.ceil(trace.span_s / config.trace_scale / 3600.0 - 1e-9))
        first = trace.start_utc.hour if trace.start_utc is not None else 0
        start = first if config.start_hour is None else config.start_hour
        full = rates.total_rate(start, hours)
        sample = config.sample or (min(1.0, trace.rate_per_s / full) if full > 0 else 1.0)
    else:
        hours = config.hours or 24.0
        start = config.start_hour or 0
        per_day = rates.total_rate(start, 24.0) * 86400.0
        sample = config.sample or (min(1.0, REQUEST_BUDGET / per_day) if per_day > 0 else 1.0)
    slots = np.maximum(1, np.ceil(backends.replicas * backends.max_batch * sample - 1e-9)).astype(np.int64)
    n_hours = max(1, math.ceil(hours - 1e-9))
    n_b = len(backends)
    pool = int(np.ceil(slots * (1.0 + config.queue_factor)).sum()) + n_b + 16
    traffic = "poisson" if trace is None else f"trace:{trace.name}"
    spread = None if trace is None else spread_trace(trace, rates, scale=config.trace_scale, horizon_s=hours * 3600.0,
                                                     start_hour=start, surge_of=timeline.surge_rows, rng=rng)
    engine = Engine.create(
        slots=slots, replicas=(backends.replicas * sample).astype(np.float64),
        prefill_tokens_per_s=backends.prefill_tokens_per_s, tpot0_s=backends.tpot0_s, tpot1_s=backends.tpot1_s,
        max_batch=backends.max_batch.astype(np.float64),
        b_site=backends.site, rtt_s=table.rtt_ms / 1000.0, slo=_slo(world), n_sites=len(world.sites),
        horizon_s=hours * 3600.0, pool_size=pool, track=0 if spread is None else len(spread.requests),
        batch_workloads=world.ds.workload_kind.values == "batch")
    state = LoadState(healthy=np.ones(n_b, dtype=bool), inflight=engine.inflight, slots=slots.astype(np.float64),
                      service_s=backends.service_s(1.0), ttft_s=backends.prefill_s + backends.tpot_s(1.0),
                      limit=slots * (1.0 + config.queue_factor), batch_inflight=engine.binflight,
                      headroom=backends.headroom, batch_fill=backends.batch_fill)
    run = SimRun(plan_path=Path(plan), doc=doc, world=world, backends=backends, table=table, config=config,
                 traffic=traffic, sample=float(sample), horizon_s=hours * 3600.0, start_hour=int(start),
                 timeline=timeline, engine=engine, slots=slots, capacity_s=np.zeros((n_hours, n_b)), trace=trace,
                 spread=spread)
    return run, rates, state


def _plan_flows(plan: Path) -> pd.DataFrame | None:
    """The plan's flows (``flows.parquet`` beside plan.json), which the router keeps zones to; None without it."""
    path = (plan if plan.is_dir() else plan.parent) / "flows.parquet"
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path, columns=["zone", "site", "model", "workload", "period", "served_mtok_day"])
    except (OSError, ValueError, KeyError) as exc:
        raise PlanFileError(f"{path}: cannot read the plan's flows ({exc}); write the plan again with "
                            "`sovcloud plan`") from exc


def _plan_world(plan: Path, doc: PlanDocument) -> World:
    """The plan's scenario (a relative source is looked up next to plan.json first) with the planner's
    shocks of the plan re-applied, compiled."""
    folder = plan if plan.is_dir() else plan.parent
    source: str | Path = doc.scenario.source
    if not Path(source).is_absolute() and (folder / source).exists():
        source = folder / source
    sc = load_scenario(source)
    own = [s.label() for s in sc.shocks]
    if doc.scenario.shocks[:len(own)] == own and len(doc.scenario.shocks) > len(own):
        extra = [parse_shock(label) for label in doc.scenario.shocks[len(own):]]
        sc = sc.model_copy(update={"shocks": [*sc.shocks, *extra]})
    return compile_world(sc)


def _refresh(state: LoadState, run: SimRun) -> None:
    """The router's TTFT and service-time estimates at each backend's current batch."""
    b, eng = run.backends, run.engine
    batch = np.clip(np.minimum(state.inflight, eng.cap) / np.maximum(eng.bpar[0], 1e-12) + 1.0, 1.0, eng.bpar[4])
    tpot = b.tpot0_s + b.tpot1_s * batch
    state.ttft_s[:] = b.prefill_s + tpot
    state.service_s[:] = b.prefill_s + b.output_tokens * tpot


def simulate(plan: Path | str, config: SimConfig,
             progress: Callable[[float, float], None] | None = None) -> SimRun:
    """Run a simulation; ``progress(hours_done, hours_total)`` is called after each chunk."""
    wall = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    run, rates, state = _setup(plan, config, rng)
    fleet = _Fleet(run, state)
    fleet.apply(0.0)
    changes = run.timeline.change_times(run.horizon_s)
    change_set = set(changes)
    pref = preferred_backend(run.table, state)
    site_of = np.append(run.backends.site, -1)  # index -1 (no backend) -> site -1
    pref_site = site_of[pref]
    eng, n_zones, done = run.engine, len(run.world.zones), 0
    deferral = _deferral(run, rates, pref)
    wbatch = eng.wbatch.astype(bool)
    release_at, expire_at = 0.0, 0.0
    for c0 in np.arange(0.0, run.horizon_s, config.chunk_s):
        c1 = min(float(c0) + config.chunk_s, run.horizon_s)
        reqs = _chunk(run, rates, rng, float(c0), c1, n_zones, done)
        done += len(reqs)
        edges = np.unique(np.concatenate([np.arange(c0, c1, config.tick_s),
                                          np.arange(release_at, c1, config.batch_tick_s),
                                          [c for c in changes if c0 <= c < c1]]))
        edges = edges[edges >= c0]
        bounds = np.append(np.searchsorted(reqs.t, edges), len(reqs))
        for i, t in enumerate(edges.tolist()):
            if t in change_set:
                eng.advance(t)
                fleet.apply(t)
            if t >= release_at:  # deferred batch work first: released at t, before the tick's arrivals
                eng.advance(t)
                _refresh(state, run)
                if t >= expire_at:
                    deferral.expire(t)
                    expire_at = t + 60.0
                release_at = t + config.batch_tick_s
                deferral.release(state, t, release_at)
            i0, i1 = int(bounds[i]), int(bounds[i + 1])
            if i0 == i1:
                continue
            sl = reqs.take(slice(i0, i1))
            is_batch = wbatch[sl.workload]
            if is_batch.any():
                deferral.push(sl.take(np.flatnonzero(is_batch)))
                sl = sl.take(np.flatnonzero(~is_batch))
                if not len(sl):
                    continue
            eng.advance(t)
            _refresh(state, run)
            backend, reason, cut = decide_tick(run.table, state, sl.zone, sl.model, sl.workload)
            run.routing_cut += cut
            eng.serve(sl.t, sl.zone, sl.workload, sl.inp, sl.out, sl.rid, backend, reason, pref_site[sl.zone, sl.model])
        if progress is not None:
            progress(c1 / 3600.0, run.horizon_s / 3600.0)
    fleet.close()
    eng.advance(run.horizon_s)
    deferral.finish(run.horizon_s)
    eng.finish()
    run.requests = done
    run.wall_s = time.perf_counter() - wall
    return run


def _deferral(run: SimRun, rates: DemandRates, pref: NDArray[np.int64]) -> Deferral:
    """The queues of the plan's batch workloads, one per (zone, model, workload) key with demand."""
    batch = run.world.ds.workload_kind.values == "batch"
    sel = np.flatnonzero(batch[rates.workload])
    deadline = np.nan_to_num(run.world.ds.workload_deadline_h.values * 3600.0, nan=np.inf)
    site_of = np.append(run.backends.site, -1)
    return Deferral(run.table, run.engine, rates.zone[sel], rates.model[sel], rates.workload[sel],
                    deadline[rates.workload[sel]], site_of[pref])


def _chunk(run: SimRun, rates: DemandRates, rng: np.random.Generator, c0: float, c1: float, n_zones: int,
           first_id: int) -> Requests:
    if run.spread is not None:
        r = run.spread.requests
        i0, i1 = np.searchsorted(r.t, [c0, c1])
        return r.take(slice(int(i0), int(i1)))
    minutes = np.append(np.arange(c0, c1, 60.0), c1)[:-1]
    surge = run.timeline.surge(minutes, n_zones)
    return rates.synthetic(c0, c1, sample=run.sample, burstiness=run.config.burstiness, start_hour=run.start_hour,
                           surge=surge, rng=rng, first_id=first_id)
