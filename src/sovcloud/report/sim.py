"""The simulation part of the report: SLO attainment, tail latencies, rejections, utilization, timeline.

Reads a validated :class:`~sovcloud.report.inputs.SimInputs` (``summary.json`` of schema
``sovcloud.sim/1`` and an optional ``timeline.parquet``) and returns figures and table rows for
the template.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go  # type: ignore[import-untyped]
from plotly.subplots import make_subplots  # type: ignore[import-untyped]

from sovcloud.report.charts import PALETTE, base_layout, color_map
from sovcloud.report.inputs import SimInputs

__all__ = ["latency_rows", "plan_rows", "sim_facts", "slo_figure", "timeline_figure", "utilization_figure"]


def _ms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:,.1f} ms"


def sim_facts(sim: SimInputs) -> list[tuple[str, str]]:
    """(label, value) rows summarising the run."""
    s = sim.summary
    r = s.requests
    rejected = ", ".join(f"{k} {v:,}" for k, v in sorted(s.rejections.items(), key=lambda kv: -kv[1])) or "none"
    return [
        ("period simulated", f"{s.period} ({s.hours:g} h, traffic {s.traffic}, seed {s.seed})"),
        ("shocks", ", ".join(s.shocks) or "none"),
        ("requests", f"{r.arrivals:,} arrived · {r.served:,} served · {r.rejected:,} rejected · {r.lost:,} lost · "
                     f"{r.in_flight:,} in flight at the end"),
        ("rejections by reason", rejected),
        ("SLO attainment (all)", f"{s.slo_attainment['all']:.1%}" if "all" in s.slo_attainment else "–"),
        ("residency violations", f"{s.residency_violations:,}"),
        ("energy · water · carbon", f"{s.energy_mwh:,.1f} MWh · {s.water_m3:,.0f} m³ · {s.carbon_t:,.1f} t CO₂e"),
        ("cost", f"US${s.cost_usd:,.0f}"),
    ]


def latency_rows(sim: SimInputs) -> list[dict[str, str]]:
    """One row per workload: TTFT, TPOT and end-to-end p50/p95/p99, and SLO attainment."""
    s = sim.summary
    rows = []
    for w, lat in s.latency_s.items():
        row = {"workload": w, "slo": f"{s.slo_attainment[w]:.1%}" if w in s.slo_attainment else "–"}
        for metric in ("ttft", "tpot", "e2e"):
            pct = getattr(lat, metric)
            for q in ("p50", "p95", "p99"):
                row[f"{metric}_{q}"] = _ms(getattr(pct, q))
        rows.append(row)
    return rows


def plan_rows(sim: SimInputs, planned: dict[str, list[float | None]], periods: list[int]) -> list[dict[str, str]]:
    """One row per workload: the plan's served share in the simulated period beside the simulation's served
    share and SLO attainment (batch: on time), and its deadline misses."""
    s = sim.summary
    i = periods.index(s.period) if s.period in periods else -1
    rows = []
    for w in [*planned, "all"]:
        if w not in s.slo_attainment:
            continue
        p = planned.get(w, [])
        share = p[i] if w != "all" and 0 <= i < len(p) else None
        rows.append({"workload": w, "planned": "–" if share is None else f"{share:.1%}",
                     "served": f"{s.served_share[w]:.1%}" if w in s.served_share else "–",
                     "slo": f"{s.slo_attainment[w]:.1%}",
                     "missed": f"{s.deadline_missed[w]:,}" if w in s.deadline_missed else "–"})
    return rows


def slo_figure(sim: SimInputs) -> go.Figure:
    """SLO attainment per workload (and overall) as horizontal bars."""
    att = sim.summary.slo_attainment
    names = [n for n in att if n != "all"] + (["all"] if "all" in att else [])
    colors = color_map(names)
    fig = go.Figure(go.Bar(y=names, x=[att[n] * 100 for n in names], orientation="h",
                           marker_color=[colors[n] if n != "all" else "#333" for n in names],
                           text=[f"{att[n]:.1%}" for n in names], textposition="auto",
                           hovertemplate="%{y}: %{x:.2f}% of requests met their SLO<extra></extra>"))
    fig.update_layout(**base_layout(max(200, 80 + 40 * len(names)), title={"text": "SLO attainment (%)"},
                                    xaxis={"range": [0, 100]}, margin={"l": 80, "r": 20, "t": 40, "b": 40}))
    fig.update_yaxes(autorange="reversed", type="category")
    return fig


def utilization_figure(sim: SimInputs) -> go.Figure:
    """Mean utilization per site over the simulated hours."""
    util = sorted(sim.summary.utilization.items(), key=lambda kv: -kv[1])
    fig = go.Figure(go.Bar(x=[k for k, _ in util], y=[v * 100 for _, v in util], marker_color=PALETTE[0],
                           hovertemplate="%{x}: %{y:.1f}%<extra></extra>"))
    fig.update_layout(**base_layout(320, title={"text": "Utilization by site (%)"}, yaxis={"range": [0, 100]}))
    fig.update_xaxes(type="category")
    return fig


def timeline_figure(sim: SimInputs) -> go.Figure | None:
    """Requests served and rejected per hour (all sites) and mean utilization, if a timeline was written."""
    tl = sim.timeline
    if tl is None or not len(tl):
        return None
    agg = tl.groupby("hour").agg(served=("served", "sum"), rejected=("rejected", "sum"),
                                 utilization=("utilization", "mean")).reset_index()
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=agg["hour"], y=agg["served"], name="served", line={"color": PALETTE[2]},
                             hovertemplate="hour %{x}: %{y:,.0f} served<extra></extra>"))
    fig.add_trace(go.Scatter(x=agg["hour"], y=agg["rejected"], name="rejected", line={"color": PALETTE[4]},
                             hovertemplate="hour %{x}: %{y:,.0f} rejected<extra></extra>"))
    fig.add_trace(go.Scatter(x=agg["hour"], y=agg["utilization"] * 100, name="mean utilization (%)",
                             line={"color": PALETTE[7], "dash": "dot"},
                             hovertemplate="hour %{x}: %{y:.1f}%<extra></extra>"), secondary_y=True)
    fig.update_yaxes(title_text="requests", secondary_y=False)
    fig.update_yaxes(title_text="utilization (%)", range=[0, 100], secondary_y=True)
    layout: dict[str, Any] = base_layout(340, title={"text": "Timeline (all sites)"},
                                         xaxis={"title": {"text": "hour"}})
    fig.update_layout(**layout)
    return fig
