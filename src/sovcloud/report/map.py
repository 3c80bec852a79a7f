"""The report's world map: sites, demand zones, the largest flows and residency groups, per period.

* Sites: marker size grows with the accelerators installed (square root), colour is the chip
  family with the most accelerators there, symbol is what the site is: an existing region
  (circle), a candidate the plan builds (square) or leases (diamond), or one it leaves closed
  (open circle).
* Demand zones: size grows with demand (square root), colour is the residency group (the rule
  that governs where the zone's personal data may be processed; the default rule: anywhere).
* Flows: the ``top`` largest zone -> site flows of each period (summed over models and
  workloads), as great-circle lines with a hover point at their midpoint.

One set of traces per period; buttons switch between periods (the last is shown first). The
base map is drawn from the Natural Earth TopoJSON inlined by the report, never fetched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go  # type: ignore[import-untyped]

from sovcloud.report.charts import PALETTE, base_layout, color_map, period_buttons
from sovcloud.report.inputs import PlanInputsForReport

__all__ = ["SITE_SYMBOLS", "MapNotes", "map_figure"]

SITE_SYMBOLS = {"existing region": "circle", "built": "square", "leased": "diamond",
                "candidate (not opened)": "circle-open"}
RESIDENCY_PALETTE = ("#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fc9272", "#c7e9c0", "#fdd0a2", "#d9d9d9",
                     "#c6dbef", "#dadaeb", "#fee6ce", "#e5f5e0")
NO_FLEET = "no accelerators"


@dataclass(frozen=True)
class MapNotes:
    """What the map shows, in words, for the caption."""

    flows_shown: dict[int, int]
    flows_total: dict[int, int]
    share_shown: dict[int, float]
    residency_groups: list[str]


def _midpoint(lat1: float, lon1: float, lat2: float, lon2: float) -> tuple[float, float]:
    """Great-circle midpoint of two points (degrees)."""
    p1, l1, p2, l2 = map(math.radians, (lat1, lon1, lat2, lon2))
    v = np.array([math.cos(p1) * math.cos(l1) + math.cos(p2) * math.cos(l2),
                  math.cos(p1) * math.sin(l1) + math.cos(p2) * math.sin(l2), math.sin(p1) + math.sin(p2)])
    return math.degrees(math.atan2(v[2], math.hypot(v[0], v[1]))), math.degrees(math.atan2(v[1], v[0]))


def _site_frame(inp: PlanInputsForReport) -> pd.DataFrame:
    """One row per (site, period): category, chip family, accelerators and the hover text."""
    sc = inp.world.scenario
    family = {c.id: c.family for c in sc.accelerators}
    options = {s.id: [str(o.kind) for o in s.options] for s in sc.sites}
    sites: dict[tuple[str, int], dict[str, float]] = {
        (str(r["site"]), int(r["period"])): {str(k): float(v) for k, v in r.items() if k not in ("site", "period")}
        for r in inp.tables["sites"][["site", "period", "built_mw", "opened", "power_used_mw", "power_cap_mw",
                                      "energy_mwh", "renewable_mwh", "water_m3", "carbon_t"]].to_dict("records")}
    fleet = inp.tables["fleet"]
    rows = []
    for meta in inp.sites:
        sid = str(meta["site"])
        for p in inp.periods:
            s = sites.get((sid, p))
            f = fleet[(fleet["site"] == sid) & (fleet["period"] == p) & (fleet["fleet_chips"] > 0)]
            chips = float(f["fleet_chips"].sum())
            fam = f.groupby(f["chip"].map(lambda c: family.get(str(c), str(c))))["fleet_chips"].sum()
            top = str(fam.idxmax()) if chips > 0 else NO_FLEET
            opened = s is not None and (s["opened"] > 0.5 or s["built_mw"] > 1e-9)
            if meta["kind"] == "existing":
                category = "existing region"
            elif opened:
                kinds = options.get(sid, [])
                category = "leased" if kinds and all(k == "lease" for k in kinds) else "built"
            else:
                category = "candidate (not opened)"
            lines = [f"<b>{meta['name']}</b> ({sid})", f"{meta['city']}, {meta['country']} · {category} · "
                     f"status {meta['status']}",
                     f"{chips:,.0f} accelerators" + (": " + ", ".join(
                         f"{int(n):,} {c}" for c, n in zip(f["chip"], f["fleet_chips"], strict=True)) if chips else "")]
            if s is not None:
                energy = s["energy_mwh"]
                share = max(s["renewable_mwh"], 0.0) / energy if energy > 0 else 0.0
                lines.append(f"IT power {s['power_used_mw']:,.2f} of {s['power_cap_mw']:,.0f} MW"
                             + (f" (built {s['built_mw']:,.2f} MW)" if s["built_mw"] > 1e-9 else ""))
                lines.append(f"energy {energy:,.0f} MWh/yr · renewable {share:.0%} · water "
                             f"{s['water_m3']:,.0f} m³ · carbon {s['carbon_t']:,.0f} t")
            rows.append({"site": sid, "period": p, "lat": float(meta["lat"]), "lon": float(meta["lon"]),
                         "category": category, "family": top, "chips": chips, "text": "<br>".join(lines)})
    return pd.DataFrame(rows)


def _zone_frame(inp: PlanInputsForReport) -> pd.DataFrame:
    """One row per (zone, period): demand, served, unserved, residency group and hover text."""
    ds = inp.world.ds
    zones = {z.id: z for z in inp.world.scenario.demand.zones}
    demand = (ds.demand_tokens_per_h.sum(["model", "workload", "hour"]) / 1e6).to_pandas()  # Mtok/day [zone, period]
    served = inp.tables["flows"].groupby(["zone", "period"])["served_mtok_day"].sum()
    unserved = inp.tables["unserved"].groupby(["zone", "period"])["unserved_mtok_day"].sum()
    allowed = ds.residency.sum("site").to_pandas()
    rule = ds.residency_rule.to_pandas()
    rows = []
    for zid in [str(z) for z in ds.zone.values]:
        z = zones[zid]
        group = str(rule[zid]) or "default (anywhere)"
        for p in inp.periods:
            d = float(demand.loc[zid, p])
            s = float(served.get((zid, p), 0.0))
            u = float(unserved.get((zid, p), 0.0))
            text = (f"<b>{z.name}</b> ({zid}, {z.kind})<br>demand {d:,.1f} Mtok/day · served {s:,.1f} · unserved "
                    f"{u:,.1f}" + (f" ({s / (s + u):.0%} served)" if s + u > 0 else "")
                    + f"<br>residency: {group} · {int(allowed[zid])} allowed site(s)")
            rows.append({"zone": zid, "period": p, "lat": z.lat, "lon": z.lon, "demand": d, "group": group,
                         "text": text})
    return pd.DataFrame(rows)


def _top_flows(inp: PlanInputsForReport, top: int) -> tuple[pd.DataFrame, dict[int, int], dict[int, float]]:
    flows = inp.tables["flows"]
    agg = flows.groupby(["zone", "site", "period"]).agg(
        served=("served_mtok_day", "sum"), rtt=("rtt_ms", "first"),
        workloads=("workload", lambda w: ", ".join(sorted({str(x) for x in w})))).reset_index()
    totals = {p: int((agg["period"] == p).sum()) for p in inp.periods}
    picked = agg.sort_values("served", ascending=False).groupby("period").head(top)
    share = {p: float(picked.loc[picked["period"] == p, "served"].sum())
             / max(float(agg.loc[agg["period"] == p, "served"].sum()), 1e-12) for p in inp.periods}
    return picked, totals, share


def _scaled(values: pd.Series, largest: float, lo: float, hi: float) -> list[float]:
    return [lo + (hi - lo) * math.sqrt(max(v, 0.0) / largest) if largest > 0 else lo for v in values]


#: The base map: Natural Earth projection at 1:110M, land and borders drawn, polar caps cut.
GEO: dict[str, Any] = {
    "scope": "world", "resolution": 110, "projection": {"type": "natural earth"},
    "showland": True, "landcolor": "#eef1f4", "showcountries": True, "countrycolor": "#c3c9d1",
    "countrywidth": 0.5, "showcoastlines": True, "coastlinecolor": "#9aa5b1", "coastlinewidth": 0.6,
    "showocean": False, "showlakes": False, "showrivers": False, "showsubunits": False, "showframe": True,
    "framecolor": "#c3c9d1", "bgcolor": "rgba(0,0,0,0)", "lataxis": {"range": [-58, 85]},
}
#: Line width of a flow by its share of the largest flow: (from, to, width).
FLOW_WIDTHS = ((0.0, 0.1, 1.0), (0.1, 0.4, 2.0), (0.4, 1.01, 3.5))
Coords = dict[str, float]


def _flow_traces(fp: pd.DataFrame, max_flow: float, top: int, zone_at: tuple[Coords, Coords],
                 site_at: tuple[Coords, Coords]) -> list[go.Scattergeo]:
    """One period's flows: lines in three widths, and a hover marker at each flow's midpoint."""
    (zlat, zlon), (slat, slon) = zone_at, site_at
    traces: list[go.Scattergeo] = []
    for lo, hi, width in FLOW_WIDTHS:
        part = fp[(fp["served"] >= lo * max_flow) & (fp["served"] < hi * max_flow)]
        if not len(part):
            continue
        lats: list[float | None] = []
        lons: list[float | None] = []
        for zone, site in zip(part["zone"], part["site"], strict=True):
            lats += [zlat[zone], slat[site], None]
            lons += [zlon[zone], slon[site], None]
        traces.append(go.Scattergeo(lat=lats, lon=lons, mode="lines",
                                    line={"width": width, "color": "rgba(35,70,140,0.45)"}, hoverinfo="skip",
                                    name=f"flows (top {top})", legendgroup="flows", showlegend=not traces))
    mids = [_midpoint(zlat[z], zlon[z], slat[s], slon[s]) for z, s in zip(fp["zone"], fp["site"], strict=True)]
    traces.append(go.Scattergeo(lat=[m[0] for m in mids], lon=[m[1] for m in mids], mode="markers",
                                marker={"size": 5, "color": "rgba(35,70,140,0.55)"}, name="flow", legendgroup="flows",
                                showlegend=False, hovertemplate="%{text}<extra></extra>",
                                text=[f"<b>{z} → {s}</b><br>{v:,.1f} Mtok/day · RTT {r:.0f} ms<br>{w}"
                                      for z, s, v, r, w in zip(fp["zone"], fp["site"], fp["served"], fp["rtt"],
                                                               fp["workloads"], strict=True)]))
    return traces


def _zone_traces(zp: pd.DataFrame, groups: list[str], group_color: dict[str, str],
                 max_demand: float) -> list[go.Scattergeo]:
    """One period's demand zones, one trace per residency group, sized by demand."""
    traces = []
    for g in groups:
        part = zp[zp["group"] == g]
        if len(part):
            traces.append(go.Scattergeo(
                lat=part["lat"], lon=part["lon"], mode="markers", text=part["text"], name=f"zones: {g}",
                legendgroup=f"zone-{g}", hovertemplate="%{text}<extra></extra>",
                marker={"size": _scaled(part["demand"], max_demand, 4, 22), "color": group_color[g],
                        "opacity": 0.8, "line": {"width": 0.6, "color": "#52606d"}}))
    return traces


def _site_traces(sp: pd.DataFrame, families: list[str], fam_color: dict[str, str],
                 max_chips: float) -> list[go.Scattergeo]:
    """One period's sites, one trace per (chip family, site category), sized by chips."""
    traces = []
    for fam in [*families, NO_FLEET]:
        for cat, symbol in SITE_SYMBOLS.items():
            part = sp[(sp["family"] == fam) & (sp["category"] == cat)]
            if len(part):
                traces.append(go.Scattergeo(
                    lat=part["lat"], lon=part["lon"], mode="markers", text=part["text"], name=f"{fam} · {cat}",
                    legendgroup=f"site-{fam}-{cat}", hovertemplate="%{text}<extra></extra>",
                    marker={"size": _scaled(part["chips"], max_chips, 8, 30), "symbol": symbol,
                            "color": fam_color[fam], "opacity": 0.95, "line": {"width": 1.2, "color": "#1f2933"}}))
    return traces


def map_figure(inp: PlanInputsForReport, top: int = 150) -> tuple[go.Figure, MapNotes]:
    """The world map (see module docstring) and notes on what it shows."""
    ds = inp.world.ds
    site_df, zone_df = _site_frame(inp), _zone_frame(inp)
    flows, totals, share = _top_flows(inp, top)
    zones, sites = ds.zone.values.tolist(), ds.site.values.tolist()
    zone_at = (dict(zip(zones, ds.zone_lat.values.tolist(), strict=True)),
               dict(zip(zones, ds.zone_lon.values.tolist(), strict=True)))
    site_at = (dict(zip(sites, ds.site_lat.values.tolist(), strict=True)),
               dict(zip(sites, ds.site_lon.values.tolist(), strict=True)))
    families = sorted({f for f in site_df["family"] if f != NO_FLEET})
    fam_color = {**color_map(families, PALETTE), NO_FLEET: "#9a9a9a"}
    groups = sorted(set(zone_df["group"]), key=lambda g: (g.startswith("default"), g))
    group_color = color_map(groups, RESIDENCY_PALETTE)
    max_chips = float(site_df["chips"].max()) if len(site_df) else 0.0
    max_demand = float(zone_df["demand"].max()) if len(zone_df) else 0.0
    max_flow = float(flows["served"].max()) if len(flows) else 0.0
    fig = go.Figure()
    trace_periods: list[int | None] = []
    for p in inp.periods:
        traces = (_flow_traces(flows[flows["period"] == p], max_flow, top, zone_at, site_at)
                  + _zone_traces(zone_df[zone_df["period"] == p], groups, group_color, max_demand)
                  + _site_traces(site_df[site_df["period"] == p], families, fam_color, max_chips))
        for trace in traces:
            trace.visible = p == inp.periods[-1]
            fig.add_trace(trace)
            trace_periods.append(p)
    fig.update_layout(**base_layout(
        640, geo=GEO, updatemenus=period_buttons(inp.periods, trace_periods, len(inp.periods) - 1),
        margin={"l": 0, "r": 0, "t": 36, "b": 0},
        legend={"font": {"size": 11}, "itemsizing": "constant", "groupclick": "togglegroup", "x": 1.0,
                "xanchor": "left", "y": 1.0, "tracegroupgap": 2}))
    notes = MapNotes(flows_shown={p: int((flows["period"] == p).sum()) for p in inp.periods}, flows_total=totals,
                     share_shown=share, residency_groups=groups)
    return fig, notes
