"""The serving discipline of a world: each model's operating point and each deployment's headroom.

Every consumer (planner capacity, simulator and gateway backends) takes its serving figures from
here, so a plan is sized for the engines the simulator and the gateway then run.

Per model m (over the workloads W_m with demand for it)
    shape_m   = demand-weighted mean (input, output) tokens over W_m      (the typical request)
    slo_m     = (min TTFT, min TPOT) over W_m                             (the strictest targets)
Per deployment (m, chip c, tensor-parallel degree tp)
    point     = serving_point(m, c, tp, shape_m, slo_m)                   (:mod:`sovcloud.physics.serving`)
    slots_1   = floor(server_chips_c / tp) * max_batch                    (one server's slots)
    u[w]      = interactive utilisation of workload w in W_m (not batch):
                max_utilization(slots_1, S_w, TTFT_w - prefill_w - tpot, tail, burstiness, cap)
                (:mod:`sovcloud.physics.queueing`; S_w the service time of w's shape at the cap)
    headroom  = 1 / u - 1 for the deployment's strictest interactive workload: slots it keeps free per
                interactive request in flight, which deferred batch work may not take
    batch     = 1 - planning.batch_reserve: the share of slots batch work may fill
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sovcloud.physics.queueing import max_utilization
from sovcloud.physics.serving import ServingPoint, serving_point
from sovcloud.scenario.catalog import Accelerator, ModelArch
from sovcloud.scenario.demand import Workload
from sovcloud.world.compiled import World

__all__ = ["Deployment", "ModelService", "deployment_service", "model_services"]


@dataclass(frozen=True)
class ModelService:
    """A model's typical request shape and strictest targets over the workloads with demand for it."""

    model: str
    workloads: tuple[str, ...]
    input_tokens: float
    output_tokens: float
    ttft_s: float | None
    tpot_s: float | None


@dataclass(frozen=True)
class Deployment:
    """One engine type (model, chip, tp) at its operating point, with its planned utilisation per workload."""

    point: ServingPoint
    utilization: dict[str, float]  # workload -> share of slots it may keep busy (batch: 1 - reserve)
    headroom: float  # free slots kept per interactive request in flight (1 / u - 1; 0 without interactive work)


def model_services(world: World) -> dict[str, ModelService]:
    """Per demanded model: its workloads, typical shape and strictest SLOs (module docstring)."""
    wl = {w.id: w for w in world.scenario.workloads}
    dem = world.ds.demand_tokens_per_h
    per = dem.sum([d for d in dem.dims if d not in ("model", "workload")]).transpose("model", "workload")
    names = [str(w) for w in per.workload.values]
    out: dict[str, ModelService] = {}
    for mi, m in enumerate(per.model.values):
        weights = per.values[mi]
        total = float(weights.sum())
        if total <= 0:
            continue
        used = [w for w, x in zip(names, weights, strict=True) if x > 0]
        share = {w: float(x) / total for w, x in zip(names, weights, strict=True)}
        ttfts = [x for x in (wl[w].ttft_s for w in used) if x is not None]
        tpots = [x for x in (wl[w].tpot_s for w in used) if x is not None]
        out[str(m)] = ModelService(
            model=str(m), workloads=tuple(used),
            input_tokens=sum(share[w] * wl[w].input_tokens for w in used),
            output_tokens=sum(share[w] * wl[w].output_tokens for w in used),
            ttft_s=min(ttfts) if ttfts else None, tpot_s=min(tpots) if tpots else None)
    return out


def _interactive_u(world: World, point: ServingPoint, chip: Accelerator, work: list[Workload]) -> dict[str, float]:
    """Planned utilisation of each interactive workload on one server of this engine (module docstring)."""
    pl = world.scenario.planning
    if not work:
        return {}
    slots = max(1, chip.server_chips // point.tp) * point.max_batch
    service = np.array([point.service_s(w.input_tokens, w.output_tokens) for w in work])
    budget = np.array([(w.ttft_s if w.ttft_s is not None else np.inf)
                       - w.input_tokens / point.prefill_tokens_per_s - point.tpot_s(point.max_batch) for w in work])
    u = max_utilization(np.full(len(work), slots), service, np.minimum(budget, 1e6), tail=pl.slo_tail,
                        burstiness=pl.burstiness, cap=pl.target_utilization)
    return {w.id: float(x) for w, x in zip(work, u, strict=True)}


def deployment_service(world: World, service: ModelService, model: ModelArch, chip: Accelerator,
                       tp: int) -> Deployment | None:
    """The engine of ``tp`` x ``chip`` for ``model`` at the model's operating point; None if it cannot run."""
    point = serving_point(model, chip, tp, service.input_tokens, service.output_tokens, service.ttft_s,
                          service.tpot_s)
    if point is None:
        return None
    wl = {w.id: w for w in world.scenario.workloads}
    interactive = [wl[w] for w in service.workloads if wl[w].kind != "batch"]
    # an engine that meets no target (its cap is the memory limit) serves batch work only
    u = _interactive_u(world, point, chip, interactive) if point.meets_slo else {w.id: 0.0 for w in interactive}
    batch = 1.0 - world.scenario.planning.batch_reserve
    util = {w: u.get(w, batch) for w in service.workloads}
    # the reserve is set by the strictest interactive workload the engine serves at all (u > 0)
    strictest = min((x for x in u.values() if x > 0), default=1.0)
    headroom = 1.0 / strictest - 1.0
    return Deployment(point=point, utilization=util, headroom=headroom)
