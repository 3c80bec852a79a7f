"""Serving backends of a plan: one per (site, model, chip) deployment, with the physics of each.

A plan's ``decisions.deployments`` says how many chips of each chip type run each model at each
site in each period, and at which tensor-parallel degree ``tp``. A *backend* is one such
deployment in one period: ``replicas = floor(chips / tp)`` engines of the serving discipline of
:mod:`sovcloud.world.serving` (the planner sized the plan with the same engines): each a
continuous-batching server of up to ``max_batch`` concurrent sequences at the model's operating
point, with

    prefill_s(I)  = prefill_time(I)                      (one prompt alone; TTFT floor)
    tpot_s(b)     = tpot0 + tpot1 * b,  b in [1, max_batch]
    headroom      = free slots kept per interactive request in flight (deferred batch may not take them)
    batch_fill    = share of slots deferred batch work may fill (1 - planning.batch_reserve)

so the simulator and the gateway's queueing estimate share one cheap, vectorised serving model.
:func:`load_plan` validates ``plan.json`` (schema ``sovcloud.plan/1``) and names the file, field,
value and fix of anything wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovcloud.errors import PlanFileError
from sovcloud.scenario.catalog import Accelerator, ModelArch
from sovcloud.vocab import PLAN_SCHEMA
from sovcloud.world.compiled import World
from sovcloud.world.serving import Deployment, deployment_service, model_services

__all__ = ["Backends", "PlanDeployment", "PlanDocument", "PlanSite", "backends_for", "load_plan"]

class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PlanDeployment(_Doc):
    site: str
    chip: str
    model: str
    period: int
    chips: float = Field(ge=0)
    tp: int = Field(ge=0)


class PlanSite(_Doc):
    site: str
    name: str
    city: str
    country: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    kind: str
    status: str


class PlanScenarioRef(_Doc):
    name: str
    source: str
    sha256: str
    shocks: list[str] = Field(default_factory=list)


class PlanDecisions(_Doc):
    deployments: list[PlanDeployment]


class PlanDocument(_Doc):
    """The parts of ``plan.json`` the simulator, the gateway and the report read."""

    schema_: str = Field(alias="schema")
    scenario: PlanScenarioRef
    periods: list[int] = Field(min_length=1)
    sites: list[PlanSite]
    decisions: PlanDecisions
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True)


def load_plan(path: Path | str) -> PlanDocument:
    """Read and validate ``plan.json`` (or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "plan.json"
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PlanFileError(f"{p}: no such plan file; run `sovcloud plan --out {p.parent}` first") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanFileError(f"{p}: cannot read the plan ({exc}); give the plan.json that `sovcloud plan` wrote") \
            from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{p}:{exc.lineno}: not valid JSON ({exc.msg}); write it again with `sovcloud plan`") \
            from exc
    if not isinstance(data, dict) or data.get("schema") != PLAN_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise PlanFileError(f"{p}: schema: expected '{PLAN_SCHEMA}' (got {got!r}); "
                            "fix: give a plan.json written by this version of `sovcloud plan`")
    try:
        doc = PlanDocument.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        field = ".".join(str(x) for x in e["loc"])
        raise PlanFileError(f"{p}: {field}: {e['msg']} (got {e.get('input')!r}); "
                            "fix: write the plan again with `sovcloud plan`") from exc
    return doc.model_copy(update={"raw": data})


@dataclass(frozen=True)
class Backends:
    """Backends of one period as parallel arrays (index ``b``), sites and models as name tuples."""

    period: int
    ids: tuple[str, ...]  # "site/model/chip"
    sites: tuple[str, ...]  # every site of the world, in the world's order
    models: tuple[str, ...]  # every model of the world, in the world's order
    chips: tuple[str, ...]  # chip id of each backend
    site: NDArray[np.int64]  # index into ``sites``
    model: NDArray[np.int64]  # index into ``models``
    tp: NDArray[np.int64]
    replicas: NDArray[np.int64]
    max_batch: NDArray[np.int64]  # concurrent sequences per replica
    input_tokens: NDArray[np.float64]  # the typical request shape the physics was evaluated at
    output_tokens: NDArray[np.float64]
    prefill_s: NDArray[np.float64]  # one typical prompt alone
    prefill_tokens_per_s: NDArray[np.float64]
    tpot0_s: NDArray[np.float64]
    tpot1_s: NDArray[np.float64]
    headroom: NDArray[np.float64]  # free slots kept per interactive request in flight (batch may not take them)
    batch_fill: float  # share of slots deferred batch work may fill

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def slots(self) -> NDArray[np.float64]:
        """Concurrent sequences a backend serves at once (replicas x max batch)."""
        return (self.replicas * self.max_batch).astype(np.float64)

    def tpot_s(self, batch: NDArray[np.float64] | float) -> NDArray[np.float64]:
        """TPOT of every backend at per-replica batch ``batch`` (clipped to [1, max_batch])."""
        b = np.clip(np.asarray(batch, dtype=np.float64), 1.0, self.max_batch)
        out: NDArray[np.float64] = self.tpot0_s + self.tpot1_s * b
        return out

    def service_s(self, batch: NDArray[np.float64] | float) -> NDArray[np.float64]:
        """Time one typical request occupies a slot at per-replica batch ``batch``."""
        out: NDArray[np.float64] = self.prefill_s + self.output_tokens * self.tpot_s(batch)
        return out


def backends_for(doc: PlanDocument, world: World, period: int | None = None) -> Backends:
    """The backends of ``doc`` in ``period`` (default: the plan's last period) over ``world``'s sites."""
    per = doc.periods[-1] if period is None else period
    if per not in doc.periods:
        raise PlanFileError(f"period {per} is not in the plan (periods {doc.periods}); choose one of them")
    sites, models = world.sites, [str(m) for m in world.ds.model.values]
    s_index = {s: i for i, s in enumerate(sites)}
    m_index = {m: i for i, m in enumerate(models)}
    services = model_services(world)
    model_by_id: dict[str, ModelArch] = {x.id: x for x in world.scenario.models}
    chip_by_id: dict[str, Accelerator] = {x.id: x for x in world.scenario.accelerators}
    rows: list[tuple[Any, ...]] = []
    engines: dict[tuple[str, str, int], Deployment | None] = {}
    for dep in doc.decisions.deployments:
        if dep.period != per or dep.tp < 1:
            continue
        if dep.site not in s_index or dep.model not in m_index:
            raise PlanFileError(f"plan deployment {dep.site}/{dep.model}: not in scenario '{world.scenario.name}'; "
                                "fix: simulate the plan with the scenario it was made from")
        replicas = int(np.floor(dep.chips / dep.tp + 1e-6))
        if replicas < 1 or dep.model not in services:
            continue
        c = chip_by_id.get(dep.chip)
        if c is None:
            raise PlanFileError(f"plan deployment {dep.site}/{dep.model}: chip '{dep.chip}' is not in scenario "
                                f"'{world.scenario.name}'; fix: simulate the plan with the scenario it was made from")
        key = (dep.model, dep.chip, dep.tp)
        if key not in engines:  # one engine type serves every site that deploys it
            engines[key] = deployment_service(world, services[dep.model], model_by_id[dep.model], c, dep.tp)
        served = engines[key]
        if served is None:
            continue
        pt = served.point
        rows.append((f"{dep.site}/{dep.model}/{dep.chip}", dep.chip, s_index[dep.site], m_index[dep.model], dep.tp,
                     replicas, pt.max_batch, pt.input_tokens, pt.output_tokens, pt.prefill_s,
                     pt.prefill_tokens_per_s, pt.tpot0_s, pt.tpot1_s, served.headroom))
    cols = list(zip(*rows, strict=True)) if rows else [()] * 14
    f64 = np.float64
    return Backends(
        period=per, ids=tuple(cols[0]), sites=tuple(sites), models=tuple(models), chips=tuple(cols[1]),
        site=np.array(cols[2], dtype=np.int64), model=np.array(cols[3], dtype=np.int64),
        tp=np.array(cols[4], dtype=np.int64), replicas=np.array(cols[5], dtype=np.int64),
        max_batch=np.array(cols[6], dtype=np.int64), input_tokens=np.array(cols[7], dtype=f64),
        output_tokens=np.array(cols[8], dtype=f64), prefill_s=np.array(cols[9], dtype=f64),
        prefill_tokens_per_s=np.array(cols[10], dtype=f64), tpot0_s=np.array(cols[11], dtype=f64),
        tpot1_s=np.array(cols[12], dtype=f64), headroom=np.array(cols[13], dtype=f64),
        batch_fill=1.0 - world.scenario.planning.batch_reserve,
    )

