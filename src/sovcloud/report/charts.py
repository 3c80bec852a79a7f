"""The per-period charts of the report, as plotly figures (rendered offline by the report page).

* costs: capex and opex by component per period (US$M), and capex against the capital budget;
* fleet: accelerators by chip (stacked by period) and by site (a site x period heat map);
* resources: IT power in use, water, carbon and the renewable share (with the scenario's target);
* served: the share of demand served by workload and by continent, from ``plan.json``;
* latency: the distribution of network round trips of served demand, weighted by served tokens.

Every figure reads the validated plan folder (:class:`~sovcloud.report.inputs.PlanInputsForReport`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go  # type: ignore[import-untyped]
from plotly.subplots import make_subplots  # type: ignore[import-untyped]

from sovcloud.report.inputs import PlanInputsForReport

__all__ = [
    "COST_LABELS",
    "PALETTE",
    "base_layout",
    "color_map",
    "costs_figure",
    "fleet_chip_figure",
    "fleet_site_figure",
    "latency_figure",
    "period_buttons",
    "resources_figure",
    "served_figure",
]

#: Colour-blind-friendly qualitative palette (Okabe-Ito, then Tableau-like extras).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000",
           "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD", "#FF9DA7", "#4E79A7", "#B07AA1")
COST_LABELS = {"capex_servers_musd": "servers (capex)", "capex_sites_musd": "sites (capex)",
               "opex_lease_musd": "leases and site opex", "energy_musd": "energy",
               "renewables_musd": "renewable premium"}
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


def color_map(keys: list[str], palette: tuple[str, ...] = PALETTE) -> dict[str, str]:
    """A stable colour per key (in the order given), cycling through ``palette``."""
    return {k: palette[i % len(palette)] for i, k in enumerate(keys)}


def base_layout(height: int, **extra: Any) -> dict[str, Any]:
    """Layout shared by every figure: white template, system fonts, compact margins."""
    layout: dict[str, Any] = {
        "template": "plotly_white", "height": height, "font": {"family": FONT, "size": 12},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40}, "hoverlabel": {"font": {"family": FONT}},
        "legend": {"font": {"size": 11}},
    }
    layout.update(extra)
    return layout


def period_buttons(periods: list[int], trace_periods: list[int | None], active: int) -> list[dict[str, Any]]:
    """Plotly ``updatemenus`` with one button per period showing that period's traces (None = always)."""
    buttons = [{"label": str(p), "method": "restyle",
                "args": [{"visible": [tp is None or tp == p for tp in trace_periods]}]} for p in periods]
    return [{"type": "buttons", "direction": "right", "active": active, "buttons": buttons, "x": 0.0, "y": 1.0,
             "xanchor": "left", "yanchor": "bottom", "pad": {"r": 4, "t": 4}, "showactive": True,
             "bgcolor": "#f4f6f8", "font": {"size": 11}}]


def _periods(inp: PlanInputsForReport) -> list[str]:
    return [str(p) for p in inp.periods]


def costs_figure(inp: PlanInputsForReport) -> go.Figure:
    """Stacked costs per period (US$M) and capex as a share of the period and total capital budgets."""
    periods = _periods(inp)
    costs = inp.plan.costs_musd
    budget = inp.world.scenario.policies.budget
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.12,
                        subplot_titles=("Costs per period (US$M)", "Capex against the capital budget (%)"))
    colors = color_map(list(COST_LABELS))
    for key, label in COST_LABELS.items():
        values = [costs.get(p, {}).get(key, 0.0) for p in periods]
        fig.add_trace(go.Bar(x=periods, y=values, name=label, marker_color=colors[key], legendgroup="costs",
                             hovertemplate=f"{label} %{{x}}: US$%{{y:,.2f}}M<extra></extra>"), row=1, col=1)
    capex = [costs.get(p, {}).get("capex_servers_musd", 0.0) + costs.get(p, {}).get("capex_sites_musd", 0.0)
             for p in periods]
    caps = [budget.per_period_usd.get(int(p)) for p in periods]
    share = [c / (b / 1e6) * 100 if b else None for c, b in zip(capex, caps, strict=True)]
    text = [f"US${c:,.1f}M of US${b / 1e6:,.0f}M" if b else f"US${c:,.1f}M (no period cap)"
            for c, b in zip(capex, caps, strict=True)]
    fig.add_trace(go.Bar(x=periods, y=share, name="capex / period budget", marker_color="#56B4E9",
                         customdata=text, texttemplate="%{y:.1f}%", textposition="outside",
                         hovertemplate="%{x}: %{y:.1f}% (%{customdata})<extra></extra>"),
                  row=1, col=2)
    cumulative = np.cumsum(capex)
    total = budget.total_usd / 1e6
    fig.add_trace(go.Scatter(x=periods, y=cumulative / total * 100 if total else [None] * len(periods),
                             mode="lines+markers", name="cumulative capex / total budget", line={"color": "#D55E00"},
                             customdata=[f"US${c:,.1f}M of US${total:,.0f}M" for c in cumulative],
                             hovertemplate="%{x}: %{y:.1f}% (%{customdata})<extra></extra>"), row=1, col=2)
    fig.add_hline(y=100, line={"dash": "dash", "color": "#444", "width": 1}, row=1, col=2,
                  annotation_text="budget", annotation_position="top left")
    top = max([100.0, *(s for s in share if s is not None), *(cumulative / total * 100 if total else [])])
    fig.update_yaxes(range=[0, top * 1.1], row=1, col=2)
    fig.update_xaxes(type="category")
    fig.update_layout(**base_layout(380, barmode="stack"))
    return fig


def fleet_chip_figure(inp: PlanInputsForReport) -> go.Figure:
    """Accelerators installed per period, stacked by chip (chip family in the legend)."""
    fleet = inp.tables["fleet"]
    periods = _periods(inp)
    by = fleet.groupby(["chip", "period"])["fleet_chips"].sum()
    chips = sorted({str(c) for c in fleet["chip"]}, key=lambda c: -float(by.loc[c].sum()))
    family = {c.id: c.family for c in inp.world.scenario.accelerators}
    colors = color_map(chips)
    fig = go.Figure()
    for chip in chips:
        values = [float(by.get((chip, int(p)), 0.0)) for p in periods]
        name = f"{chip} ({family.get(chip, '?')})"
        fig.add_trace(go.Bar(x=periods, y=values, name=name, marker_color=colors[chip],
                             hovertemplate=f"{name} %{{x}}: %{{y:,.0f}} chips<extra></extra>"))
    if not chips:
        fig.add_annotation(text="no accelerators in this plan", showarrow=False, x=0.5, y=0.5, xref="paper",
                           yref="paper")
    fig.update_layout(**base_layout(380, barmode="stack", title={"text": "Fleet by chip (accelerators)"}))
    fig.update_xaxes(type="category")
    return fig


def fleet_site_figure(inp: PlanInputsForReport) -> go.Figure:
    """Accelerators per site and period as a heat map, with the chip mix in the hover."""
    fleet = inp.tables["fleet"]
    periods = _periods(inp)
    total = fleet.groupby(["site", "period"])["fleet_chips"].sum()
    mix: dict[tuple[str, int], list[str]] = {}
    for site, chip, period, n in fleet[fleet["fleet_chips"] > 0][["site", "chip", "period", "fleet_chips"]].itertuples(
            index=False):
        mix.setdefault((str(site), int(period)), []).append(f"{int(n):,} {chip}")
    last = int(periods[-1])
    sites = sorted({str(s) for s in fleet["site"]},
                   key=lambda s: (-float(total.get((s, last), 0.0)), -float(total.loc[s].sum()), s))
    z = [[float(total.get((s, int(p)), 0.0)) for p in periods] for s in sites]
    custom = [[", ".join(mix.get((s, int(p)), ["none"])) for p in periods] for s in sites]
    fig = go.Figure(go.Heatmap(
        x=periods, y=sites, z=z, customdata=custom, colorscale="Blues", texttemplate="%{z:,.0f}",
        colorbar={"title": {"text": "chips"}},
        hovertemplate="%{y} %{x}: %{z:,.0f} chips (%{customdata})<extra></extra>"))
    fig.update_layout(**base_layout(max(220, 60 + 24 * len(sites)), title={"text": "Fleet by site (accelerators)"},
                                    margin={"l": 140, "r": 20, "t": 40, "b": 40}))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", side="top")
    return fig


def resources_figure(inp: PlanInputsForReport) -> go.Figure:
    """IT power in use, water, carbon and renewable share per period (sum over sites)."""
    sites = inp.tables["sites"]
    periods = _periods(inp)
    agg = sites.groupby("period")[["power_used_mw", "power_cap_mw", "energy_mwh", "renewable_mwh", "water_m3",
                                    "carbon_t"]].sum()

    def col(name: str) -> list[float]:
        return [float(agg[name].get(int(p), 0.0)) for p in periods]

    energy, renewable = col("energy_mwh"), col("renewable_mwh")
    share = [max(r, 0.0) / e * 100 if e > 0 else 0.0 for r, e in zip(renewable, energy, strict=True)]
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.16, horizontal_spacing=0.1,
                        subplot_titles=("IT power in use (MW)", "Water (m³ per year)", "Carbon (t CO₂e per year)",
                                        "Renewable share of energy (%)"))
    fig.add_trace(go.Bar(x=periods, y=col("power_used_mw"), name="IT power", marker_color=PALETTE[0],
                         customdata=[f"{e:,.0f} MWh/yr; site caps {c:,.0f} MW"
                                     for e, c in zip(energy, col("power_cap_mw"), strict=True)],
                         hovertemplate="%{x}: %{y:,.2f} MW (%{customdata})<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=periods, y=col("water_m3"), name="water", marker_color=PALETTE[5],
                         hovertemplate="%{x}: %{y:,.0f} m³<extra></extra>"), row=1, col=2)
    fig.add_trace(go.Bar(x=periods, y=col("carbon_t"), name="carbon", marker_color="#6b7785",
                         hovertemplate="%{x}: %{y:,.0f} t CO₂e<extra></extra>"), row=2, col=1)
    fig.add_trace(go.Bar(x=periods, y=share, name="renewable share", marker_color=PALETTE[2],
                         hovertemplate="%{x}: %{y:.1f}%<extra></extra>"), row=2, col=2)
    targets = inp.world.scenario.policies.renewable_target
    if targets:
        fig.add_trace(go.Scatter(x=periods, y=[targets[int(p)] * 100 if int(p) in targets else None
                                               for p in periods],
                                 mode="markers", name="target", marker={"symbol": "line-ew-open", "size": 28,
                                                                         "line": {"width": 3, "color": "#D55E00"}},
                                 hovertemplate="%{x} target: %{y:.0f}%<extra></extra>"), row=2, col=2)
    fig.update_yaxes(range=[0, 100], row=2, col=2)
    fig.update_xaxes(type="category")
    fig.update_layout(**base_layout(520, showlegend=False))
    return fig


def served_figure(inp: PlanInputsForReport) -> go.Figure:
    """Share of demand served per period, by workload and by continent (from plan.json)."""
    shares = inp.plan.served_share
    periods = [str(p) for p in shares.periods]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Served share by workload (%)", "Served share by continent (%)"))
    for col, table in ((1, shares.by_workload), (2, shares.by_continent)):
        colors = color_map(list(table), PALETTE if col == 1 else PALETTE[4:])
        for name, values in table.items():
            ys = [v * 100 if v is not None and math.isfinite(v) else None for v in values]
            fig.add_trace(go.Bar(x=periods, y=ys, name=name, marker_color=colors[name], legendgroup=f"g{col}",
                                 hovertemplate=f"{name} %{{x}}: %{{y:.1f}}%<extra></extra>"), row=1, col=col)
    fig.update_yaxes(range=[0, 105])
    fig.update_xaxes(type="category")
    fig.update_layout(**base_layout(380, barmode="group"))
    return fig


def latency_figure(inp: PlanInputsForReport, bin_ms: float = 5.0) -> go.Figure:
    """Histogram of network RTT of served demand, weighted by served tokens, per workload; one view per period."""
    flows = inp.tables["flows"]
    ds = inp.world.ds
    workloads = [str(w) for w in ds.workload.values]
    top = float(flows["rtt_ms"].max()) if len(flows) else bin_ms
    edges = np.arange(0.0, math.ceil(max(top, bin_ms) / bin_ms) * bin_ms + bin_ms, bin_ms)
    centers = (edges[:-1] + edges[1:]) / 2
    colors = color_map(workloads)
    fig = go.Figure()
    trace_periods: list[int | None] = []
    last = inp.periods[-1]
    for p in inp.periods:
        fp = flows[flows["period"] == p]
        total = float(fp["served_mtok_day"].sum())
        for w in workloads:
            fw = fp[fp["workload"] == w]
            weights, _ = np.histogram(fw["rtt_ms"], bins=edges, weights=fw["served_mtok_day"])
            share = weights / total * 100 if total > 0 else weights
            fig.add_trace(go.Bar(
                x=centers, y=share, width=bin_ms, name=w, marker_color=colors[w], visible=p == last,
                legendgroup=w, customdata=np.stack([edges[:-1], edges[1:], weights], axis=1),
                hovertemplate=(f"{w} {p}, " + "%{customdata[0]:.0f}–%{customdata[1]:.0f} ms: %{y:.2f}% of served "
                               "tokens (%{customdata[2]:,.1f} Mtok/day)<extra></extra>")))
            trace_periods.append(p)
    budgets = ds.workload_rtt_budget_ms.values
    shapes, notes = [], []
    for w, b in zip(workloads, budgets, strict=True):
        if np.isfinite(b):
            shapes.append({"type": "line", "x0": float(b), "x1": float(b), "y0": 0, "y1": 1, "yref": "paper",
                           "line": {"dash": "dot", "color": colors[w], "width": 2}})
            notes.append({"x": float(b), "y": 1, "yref": "paper", "text": f"{w} budget {b:.0f} ms", "showarrow": False,
                          "yanchor": "bottom", "font": {"size": 10, "color": colors[w]}})
    fig.update_layout(**base_layout(
        400, barmode="stack", bargap=0, shapes=shapes, annotations=notes,
        updatemenus=period_buttons(inp.periods, trace_periods, len(inp.periods) - 1),
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        xaxis={"title": {"text": "network round trip, user ↔ site (ms)"}},
        yaxis={"title": {"text": "% of served tokens"}}))
    return fig
