"""What the report reads: a plan folder (plan.json + Parquet tables), its scenario, and a simulation.

:func:`load_plan_inputs` validates ``plan.json`` (schema ``sovcloud.plan/1``, via
:func:`sovcloud.routing.backends.load_plan`, plus the parts only the report reads), the Parquet tables
next to it, and reloads the scenario it names (re-applying the plan's shocks) so the map can
place demand zones and residency groups. When the reloaded scenario's SHA-256 differs from the
one in ``plan.json`` the report carries a warning rather than failing.

:func:`load_sim` validates a simulation folder: ``summary.json`` (schema ``sovcloud.sim/1``) and
an optional ``timeline.parquet`` (columns hour, site, served, rejected, utilization). Anything
malformed raises :class:`~sovcloud.errors.PlanFileError` naming the file, the field, the value
and the fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovcloud.errors import PlanFileError, SovcloudError
from sovcloud.routing.backends import load_plan
from sovcloud.scenario.loader import load_scenario
from sovcloud.scenario.model import Scenario
from sovcloud.scenario.shocks import parse_shock
from sovcloud.vocab import SIM_SCHEMA
from sovcloud.world.compiled import World
from sovcloud.world.compiled import compile as compile_world
from sovcloud.world.shocks import apply_shocks

__all__ = [
    "TABLE_COLUMNS",
    "PlanInputsForReport",
    "ReportPlan",
    "SimInputs",
    "SimSummary",
    "load_plan_inputs",
    "load_sim",
]

#: Parquet tables of a plan folder the report reads, with the columns it needs.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "sites": ("site", "period", "built_mw", "opened", "power_used_mw", "power_cap_mw", "energy_mwh",
              "renewable_mwh", "water_m3", "carbon_t"),
    "fleet": ("site", "chip", "period", "fleet_chips"),
    "flows": ("zone", "site", "model", "workload", "period", "served_mtok_day", "rtt_ms"),
    "unserved": ("zone", "model", "workload", "period", "unserved_mtok_day"),
}
TIMELINE_COLUMNS = ("hour", "site", "served", "rejected", "utilization")


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SolverOutcome(_Doc):
    source: str
    status: str
    objective_musd: float | None = None
    bound_musd: float | None = None
    gap: float | None = None
    timings_s: dict[str, float] = Field(default_factory=dict)


class ServedShare(_Doc):
    by_workload: dict[str, list[float | None]]
    by_continent: dict[str, list[float | None]]
    periods: list[int]


class PlanChecks(_Doc):
    residency_violations: int
    latency_violations: int
    export_violations: int
    power_violations: int
    budget_ok: bool


class GreedyBaseline(_Doc):
    discounted_cost_musd: float
    served_mtok_day: float
    objective_musd: float | None = None


class ReportPlan(_Doc):
    """The parts of ``plan.json`` the report reads beyond :class:`~sovcloud.routing.backends.PlanDocument`."""

    created: str = ""
    solver: SolverOutcome
    costs_musd: dict[str, dict[str, float]]
    discounted_cost_musd: float
    served_share: ServedShare
    latency_ms_p50_p95: dict[str, list[float | None]]
    checks: PlanChecks
    shortfalls: list[str]
    greedy_baseline: GreedyBaseline | None = None
    served_mtok_day: float | None = None


class SimRequests(_Doc):
    arrivals: int = Field(ge=0)
    served: int = Field(ge=0)
    rejected: int = Field(ge=0)
    lost: int = Field(ge=0)
    in_flight: int = Field(ge=0)


class Percentiles(_Doc):
    p50: float | None
    p95: float | None
    p99: float | None


class WorkloadLatency(_Doc):
    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles


class SimPlanRef(_Doc):
    path: str
    scenario_sha256: str


class SimSummary(_Doc):
    """``summary.json`` of a simulation (schema ``sovcloud.sim/1``)."""

    schema_: str = Field(alias="schema")
    plan: SimPlanRef
    period: int
    hours: float = Field(gt=0)
    seed: int
    traffic: str
    shocks: list[str]
    requests: SimRequests
    rejections: dict[str, int]
    slo_attainment: dict[str, float]
    served_share: dict[str, float] = Field(default_factory=dict)
    deadline_missed: dict[str, int] = Field(default_factory=dict)
    latency_s: dict[str, WorkloadLatency]
    residency_violations: int = Field(ge=0)
    utilization: dict[str, float]
    energy_mwh: float
    water_m3: float
    carbon_t: float
    cost_usd: float


@dataclass(frozen=True)
class SimInputs:
    """A validated simulation folder."""

    path: Path
    summary: SimSummary
    timeline: pd.DataFrame | None


@dataclass(frozen=True)
class PlanInputsForReport:
    """A validated plan folder with its reloaded scenario and compiled world."""

    path: Path  # plan.json
    raw: dict[str, Any]
    plan: ReportPlan
    periods: list[int]
    sites: list[dict[str, Any]]
    scenario_name: str
    scenario_source: str
    scenario_sha256: str
    shocks: list[str]
    tables: dict[str, pd.DataFrame]
    world: World
    warnings: list[str] = field(default_factory=list)


def _first_error(exc: ValidationError, path: Path, fix: str) -> PlanFileError:
    e = exc.errors(include_url=False)[0]
    where = ".".join(str(x) for x in e["loc"]) or "(document)"
    value = repr(e.get("input"))
    if len(value) > 80:
        value = value[:77] + "..."
    return PlanFileError(f"{path}: {where}: {e['msg']} (got {value}); fix: {fix}")


def _read_table(path: Path, columns: tuple[str, ...], fix: str) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError as exc:
        raise PlanFileError(f"{path}: no such file; fix: {fix}") from exc
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PlanFileError(f"{path}: not a readable Parquet table ({first}); fix: {fix}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PlanFileError(f"{path}: column(s) {', '.join(missing)} missing (has {', '.join(map(str, frame.columns))}"
                            f"); fix: {fix}")
    return frame


def _scenario_sha256(sc: Scenario) -> str:
    return hashlib.sha256(sc.model_dump_json().encode()).hexdigest()


def _reload_scenario(path: Path, source: str, shocks: list[str]) -> tuple[Scenario, list[str]]:
    """The plan's scenario with its shocks applied, and warnings about what could not be re-applied."""
    candidates: list[str | Path] = [source]
    if not Path(source).is_absolute() and (path.parent / source).exists():
        candidates.insert(0, path.parent / source)
    try:
        sc = load_scenario(candidates[0])
    except SovcloudError as exc:
        lines = str(exc).splitlines()
        detail = "; ".join(lines[:2])
        raise PlanFileError(f"{path}: scenario.source: cannot load {source!r} ({detail}); fix: put the scenario back "
                            "at that path or write the plan again") from exc
    own = [s.label() for s in sc.shocks]
    warnings: list[str] = []
    if shocks[:len(own)] != own:
        warnings.append(f"the plan's shocks ({', '.join(shocks) or 'none'}) do not start with the scenario's own "
                        f"({', '.join(own)}); the map uses the scenario's")
        return (apply_shocks(sc) if sc.shocks else sc), warnings
    try:
        extra = [parse_shock(label) for label in shocks[len(own):]]
    except SovcloudError as exc:
        warnings.append(f"the plan's shocks could not be re-applied ({str(exc).splitlines()[-1]})")
        extra = []
    if extra or sc.shocks:
        try:
            sc = apply_shocks(sc, [*sc.shocks, *extra])
        except SovcloudError as exc:
            warnings.append(f"the plan's shocks could not be re-applied ({str(exc).splitlines()[-1]})")
    return sc, warnings


def load_plan_inputs(plan_dir_or_json: Path) -> PlanInputsForReport:
    """Read and validate a plan folder (or its ``plan.json``) and reload its scenario."""
    doc = load_plan(plan_dir_or_json)
    path = Path(plan_dir_or_json)
    if path.is_dir():
        path = path / "plan.json"
    fix = "write the plan again with `sovcloud plan`"
    try:
        plan = ReportPlan.model_validate(doc.raw)
    except ValidationError as exc:
        raise _first_error(exc, path, fix) from exc
    tables = {name: _read_table(path.parent / f"{name}.parquet", cols, f"{fix} (it writes {name}.parquet next to "
                                "plan.json)") for name, cols in TABLE_COLUMNS.items()}
    for name, frame in tables.items():
        stray = sorted(set(frame["period"].astype(int)) - set(doc.periods))
        if stray:
            raise PlanFileError(f"{path.parent / (name + '.parquet')}: period {stray[0]} is not a period of plan.json "
                                f"({doc.periods}); fix: {fix}")
    sc, warnings = _reload_scenario(path, doc.scenario.source, list(doc.scenario.shocks))
    sha = _scenario_sha256(sc)
    if sha != doc.scenario.sha256:
        warnings.append(f"the scenario '{doc.scenario.source}' has changed since the plan was made (SHA-256 "
                        f"{sha[:12]}… now, {doc.scenario.sha256[:12]}… in plan.json): the map and the sources "
                        "show the scenario as it is now")
    world = compile_world(sc)
    known = set(world.sites)
    unknown = sorted({str(s) for s in tables["sites"]["site"]} - known)
    if unknown:
        raise PlanFileError(f"{path.parent / 'sites.parquet'}: site '{unknown[0]}' is not in scenario "
                            f"'{sc.name}'; fix: give the scenario the plan was made with, or {fix}")
    return PlanInputsForReport(
        path=path, raw=doc.raw, plan=plan, periods=list(doc.periods),
        sites=[s.model_dump() for s in doc.sites], scenario_name=doc.scenario.name,
        scenario_source=doc.scenario.source, scenario_sha256=doc.scenario.sha256,
        shocks=list(doc.scenario.shocks), tables=tables, world=world, warnings=warnings)


def load_sim(sim_dir: Path) -> SimInputs:
    """Read and validate a simulation folder (or its ``summary.json``) and an optional ``timeline.parquet``."""
    path = Path(sim_dir)
    if path.is_dir() or path.suffix != ".json":
        path = path / "summary.json"
    fix = "run `sovcloud simulate` again to write it"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PlanFileError(f"{path}: no such file; fix: give --sim the folder `sovcloud simulate` wrote") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanFileError(f"{path}: cannot read ({exc}); fix: {fix}") from exc
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); fix: {fix}") from exc
    if not isinstance(data, dict) or data.get("schema") != SIM_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise PlanFileError(f"{path}: schema: expected '{SIM_SCHEMA}' (got {got!r}); fix: {fix}")
    try:
        summary = SimSummary.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, path, fix) from exc
    for name, share in summary.slo_attainment.items():
        if not 0.0 <= share <= 1.0:
            raise PlanFileError(f"{path}: slo_attainment.{name}: a share must be between 0 and 1 (got {share!r}); "
                                f"fix: {fix}")
    timeline_path = path.parent / "timeline.parquet"
    timeline = _read_table(timeline_path, TIMELINE_COLUMNS, fix) if timeline_path.exists() else None
    return SimInputs(path=path.parent, summary=summary, timeline=timeline)
