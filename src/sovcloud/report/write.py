"""The HTML report of a plan (and optionally a simulation): one self-contained file that opens offline.

``build_report(plan_dir_or_json, sim_dir=None)`` returns the page; ``write_report`` writes it. The
page is rendered from the Jinja2 template ``templates/report.html.j2`` and carries everything it
needs inline: plotly.js (once, from the plotly package), the figures as JSON, the Natural Earth
TopoJSON of the base map (``templates/world-110m.json``, registered as plotly's ``world_110m``
asset so plotly.js never fetches it) and the CSS. It makes no network request and loads no font.

Sections: summary, world map (:mod:`sovcloud.report.map`), per-period charts
(:mod:`sovcloud.report.charts`), the planner's shortfall explanations and binding limits, solver
status and gap, checks, shocks, the greedy baseline, the simulation (:mod:`sovcloud.report.sim`)
when a simulation folder is given, and the scenario's assumptions and sources with links
(:mod:`sovcloud.report.sources`).
"""

from __future__ import annotations

import datetime as dt
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import plotly.io as pio  # type: ignore[import-untyped]
from jinja2 import Environment, PackageLoader, StrictUndefined
from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

from sovcloud.errors import UsageError
from sovcloud.report.charts import (
    costs_figure,
    fleet_chip_figure,
    fleet_site_figure,
    latency_figure,
    resources_figure,
    served_figure,
)
from sovcloud.report.inputs import PlanInputsForReport, SimInputs, load_plan_inputs, load_sim
from sovcloud.report.map import map_figure
from sovcloud.report.sim import latency_rows, plan_rows, sim_facts, slo_figure, timeline_figure, utilization_figure
from sovcloud.report.sources import source_rows

__all__ = ["TOP_FLOWS", "build_report", "write_report"]

#: Flows drawn on the map per period (the largest, summed over models and workloads).
TOP_FLOWS = 150
PLOT_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True, "scrollZoom": False,
                               "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(loader=PackageLoader("sovcloud.report", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["musd"] = _musd
    env.filters["pct"] = _pct
    return env


@lru_cache(maxsize=1)
def _topojson() -> str:
    return (resources.files("sovcloud.report") / "templates" / "world-110m.json").read_text(encoding="utf-8")


def _script_json(text: str) -> str:
    """JSON made safe to sit inside a <script> element (no '</script>', no HTML specials)."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _musd(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"US${value / 1000:,.2f}B" if abs(value) >= 1000 else f"US${value:,.2f}M"


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * 100:.{digits}f}%"


def _figure(fig_id: str, fig: Any) -> dict[str, str]:
    return {"id": fig_id, "json": _script_json(pio.to_json(fig, validate=False, pretty=False))}


def _served_overall(inp: PlanInputsForReport) -> dict[int, float]:
    flows, unserved = inp.tables["flows"], inp.tables["unserved"]
    out = {}
    for p in inp.periods:
        s = float(flows.loc[flows["period"] == p, "served_mtok_day"].sum())
        u = float(unserved.loc[unserved["period"] == p, "unserved_mtok_day"].sum())
        out[p] = s / (s + u) if s + u > 0 else float("nan")
    return out


def _checks(inp: PlanInputsForReport) -> list[dict[str, Any]]:
    c = inp.plan.checks
    rows: list[dict[str, Any]] = [
        {"name": label, "ok": n == 0, "value": "none" if n == 0 else f"{n:,}"}
        for label, n in (("residency violations", c.residency_violations),
                         ("latency-budget violations", c.latency_violations),
                         ("export-control violations", c.export_violations),
                         ("power-cap violations", c.power_violations))]
    rows.append({"name": "capital budget respected", "ok": c.budget_ok, "value": "yes" if c.budget_ok else "no"})
    return rows


def _solver(inp: PlanInputsForReport) -> list[tuple[str, str]]:
    s = inp.plan.solver
    total = s.timings_s.get("total_s")
    return [
        ("solver", s.source),
        ("status", s.status),
        ("objective", _musd(s.objective_musd)),
        ("best bound", _musd(s.bound_musd)),
        ("relative gap", _pct(s.gap, 2)),
        ("solve time", f"{total:,.1f} s" if total is not None else "–"),
        ("discounted cost of the plan", _musd(inp.plan.discounted_cost_musd)),
    ]


def _greedy(inp: PlanInputsForReport) -> list[tuple[str, str, str]] | None:
    g = inp.plan.greedy_baseline
    if g is None:
        return None
    mine = inp.plan.discounted_cost_musd
    saving = (g.discounted_cost_musd - mine) / g.discounted_cost_musd if g.discounted_cost_musd else float("nan")
    served = inp.plan.served_mtok_day
    return [
        ("discounted cost", _musd(mine), _musd(g.discounted_cost_musd)),
        ("served (Mtok/day, all periods)", f"{served:,.0f}" if served is not None else "–",
         f"{g.served_mtok_day:,.0f}"),
        ("objective", _musd(inp.plan.solver.objective_musd), _musd(g.objective_musd)),
        ("saving of the plan over the baseline", _pct(saving), ""),
    ]


def _settings(inp: PlanInputsForReport) -> list[tuple[str, str]]:
    sc = inp.world.scenario
    b = sc.policies.budget
    per = ", ".join(f"{p}: {_musd(v / 1e6)}" for p, v in sorted(b.per_period_usd.items())) or "none"
    targets = ", ".join(f"{p}: {v:.0%}" for p, v in sorted(sc.policies.renewable_target.items())) or "none"
    return [
        ("operator", f"{sc.operator.name} (HQ {sc.operator.hq_country}, investor class "
                     f"{sc.policies.investor_class})"),
        ("periods", ", ".join(str(p) for p in sc.horizon.periods) + f" (discount rate {sc.horizon.discount_rate:.0%})"),
        ("capital budget", f"{_musd(b.total_usd / 1e6)} in total; per period {per}"),
        ("renewable target", targets),
        ("unserved demand penalty", f"US${sc.planning.unserved_penalty_usd_per_mtok:g} per million tokens"),
        ("resilience share", f"{sc.planning.resilience_share:.0%} of a residency group's served peak survives losing "
                             "any one site"),
        ("solver limits", f"MIP gap {sc.planning.mip_gap:g}, time limit {sc.planning.time_limit_s:g} s"),
        ("sites · chips · models · demand zones", f"{len(sc.sites)} · {len(sc.accelerators)} · {len(sc.models)} · "
                                                  f"{len(sc.demand.zones)}"),
    ]


def _sim_context(sim: SimInputs, inp: PlanInputsForReport, warnings: list[str]) -> dict[str, Any]:
    s = sim.summary
    if s.plan.scenario_sha256 != inp.scenario_sha256:
        warnings.append(f"the simulation in {sim.path} was run on another scenario (SHA-256 "
                        f"{s.plan.scenario_sha256[:12]}…) than this plan ({inp.scenario_sha256[:12]}…)")
    if s.period not in inp.periods:
        warnings.append(f"the simulation's period {s.period} is not a period of this plan ({inp.periods})")
    figures = [_figure("fig-sim-slo", slo_figure(sim)), _figure("fig-sim-util", utilization_figure(sim))]
    timeline = timeline_figure(sim)
    if timeline is not None:
        figures.append(_figure("fig-sim-timeline", timeline))
    share = inp.plan.served_share
    return {"path": str(sim.path), "facts": sim_facts(sim), "latency": latency_rows(sim), "figures": figures,
            "versus": plan_rows(sim, share.by_workload, share.periods), "period": s.period}


def build_report(plan_dir_or_json: Path, sim_dir: Path | None = None) -> str:
    """The report page of a plan folder (or its ``plan.json``), with a simulation folder if given."""
    inp = load_plan_inputs(Path(plan_dir_or_json))
    sim = load_sim(Path(sim_dir)) if sim_dir is not None else None
    warnings = list(inp.warnings)
    map_fig, notes = map_figure(inp, TOP_FLOWS)
    figures = {
        "map": _figure("fig-map", map_fig),
        "costs": _figure("fig-costs", costs_figure(inp)),
        "fleet_chip": _figure("fig-fleet-chip", fleet_chip_figure(inp)),
        "fleet_site": _figure("fig-fleet-site", fleet_site_figure(inp)),
        "resources": _figure("fig-resources", resources_figure(inp)),
        "served": _figure("fig-served", served_figure(inp)),
        "latency": _figure("fig-latency", latency_figure(inp)),
    }
    sim_ctx = _sim_context(sim, inp, warnings) if sim is not None else None
    served = _served_overall(inp)
    last = inp.periods[-1]
    sources = source_rows(inp.world.scenario)
    context = {
        "title": f"sovcloud plan report: {inp.scenario_name}",
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "plan_path": str(inp.path), "created": inp.plan.created,
        "scenario": {"name": inp.scenario_name, "source": inp.scenario_source, "sha256": inp.scenario_sha256},
        "periods": inp.periods, "last": last, "warnings": warnings,
        "cards": [
            ("solver", f"{inp.plan.solver.status} ({inp.plan.solver.source})"),
            ("gap", _pct(inp.plan.solver.gap, 2)),
            ("discounted cost", _musd(inp.plan.discounted_cost_musd)),
            (f"demand served in {last}", _pct(served[last])),
            ("checks", "all pass" if all(r["ok"] for r in _checks(inp)) else "violations"),
            ("shortfalls", f"{len(inp.plan.shortfalls)}"),
        ],
        "served": served, "solver": _solver(inp), "checks": _checks(inp), "shocks": inp.shocks,
        "shortfalls": inp.plan.shortfalls, "greedy": _greedy(inp), "settings": _settings(inp),
        "latency_p": [(w, [f"{x:,.0f} ms" if x is not None and math.isfinite(x) else "–" for x in v])
                      for w, v in inp.plan.latency_ms_p50_p95.items()],
        "top_flows": TOP_FLOWS, "notes": notes, "figures": figures, "sim": sim_ctx,
        "sources": [r for r in sources if r.kind == "source"],
        "assumptions": [r for r in sources if r.kind == "assumption"],
        "plotly_js": get_plotlyjs(), "topojson": _script_json(_topojson()), "plot_config": PLOT_CONFIG,
    }
    return _environment().get_template("report.html.j2").render(**context)


def write_report(plan_json: Path, out: Path, sim_dir: Path | None = None) -> Path:
    """Build the report of ``plan_json`` (a plan.json or its folder) and write it to ``out``."""
    html = build_report(plan_json, sim_dir)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the report to {out}: {exc.strerror}; choose another --out") from exc
    return out
