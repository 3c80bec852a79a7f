"""Readable terminal tables of a scenario (``sovcloud show``)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from rich.console import Console
from rich.table import Table

from sovcloud.geo import countries
from sovcloud.policy.masks import EXPORT_CODES
from sovcloud.world.compiled import World

__all__ = ["footprint", "show_world"]

_STATUS = {v: k for k, v in EXPORT_CODES.items()}


def _fmt(x: float, digits: int = 0) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:,.{digits}f}"


def footprint(world: World) -> tuple[str, list[str]]:
    """One line comparing the scenario's regions/zones with the headline, and the reasons they differ."""
    sc = world.scenario
    existing = [s for s in sc.sites if s.kind == "existing"]
    active = [s for s in existing if s.is_active]
    closing = [s for s in existing if s.status == "shutting_down"]
    azs = sum(s.availability_zones for s in active)
    line = f"{len(active)} active regions with {azs} availability zones"
    if closing:
        line += f" (+{len(closing)} shutting down)"
    notes: list[str] = []
    h = sc.headline
    if h is not None:
        line += f"; headline: {h.regions} regions / {h.availability_zones} zones as of {h.as_of}"
        year = int(h.as_of[:4])
        late = [s.id for s in active if s.available_from is not None and s.available_from > year]
        if late:
            notes.append(f"{len(late)} region(s) appear only in later documents: {', '.join(late)}")
        if closing:
            notes.append(f"shutting down, not counted as active: {', '.join(s.id for s in closing)}")
        if azs != h.availability_zones:
            notes.append(
                f"zones per region are the most zone ids seen in public docs per region (sum {azs} vs "
                f"{h.availability_zones}); the operator publishes no canonical per-region count"
            )
    return line, notes


def _header(world: World, console: Console) -> None:
    """The scenario name, operator, horizon, budget and the footprint line."""
    sc = world.scenario
    console.print(f"[bold]{sc.name}[/bold]: {sc.description.strip()}")
    console.print(
        f"operator {sc.operator.name} (HQ {sc.operator.hq_country}); periods {sc.horizon.periods}; "
        f"budget US${sc.policies.budget.total_usd / 1e9:,.1f}B; discount rate {sc.horizon.discount_rate:.0%}"
    )
    line, notes = footprint(world)
    console.print(f"[bold]Footprint[/bold]: {line}")
    for n in notes:
        console.print(f"  - {n}")


def _regions(world: World, console: Console) -> None:
    """Existing regions: availability zones, periods served, installed and expansion power."""
    sc = world.scenario
    ds = world.ds
    t = Table(title="Regions (existing sites)")
    for col in ("id", "name", "country", "status", "AZs", "serves", "installed MW", "expansion MW (last period)"):
        t.add_column(col)
    last = sc.horizon.periods[-1]
    for s in sc.sites:
        if s.kind != "existing":
            continue
        serves = ", ".join(str(p) for p, ok in zip(sc.horizon.periods, ds.site_available.sel(site=s.id).values,
                                                   strict=True) if ok)
        t.add_row(s.id, s.name, s.country, s.status, str(s.availability_zones), serves,
                  _fmt(max(s.installed_power_mw.values(), default=0.0)),
                  _fmt(sum(o.power_cap_mw.get(last, 0.0) for o in s.options)))
    console.print(t)


def _candidates(world: World, console: Console) -> None:
    """Announced new sites and candidates: options, lead times, power by period."""
    sc = world.scenario
    ds = world.ds
    t = Table(title="Announced new sites and candidates")
    for col in ("id", "name", "country", "options", "lead (months)", "MW by period", "first period"):
        t.add_column(col)
    for s in sc.sites:
        if s.kind != "candidate":
            continue
        avail = [p for p, ok in zip(sc.horizon.periods, ds.site_available.sel(site=s.id).values, strict=True) if ok]
        caps = "; ".join(f"{p}: {sum(o.power_cap_mw.get(p, 0.0) for o in s.options):g}" for p in sc.horizon.periods)
        t.add_row(s.id, s.name, s.country, ", ".join(o.kind for o in s.options),
                  ", ".join(str(o.lead_time_months) for o in s.options), caps, str(avail[0]) if avail else "none")
    console.print(t)


def _accelerators(world: World, console: Console) -> None:
    """Accelerators with their export status at home and abroad in the last period."""
    sc = world.scenario
    ds = world.ds
    last = sc.horizon.periods[-1]
    t = Table(title=f"Accelerators (export status for HQ {sc.operator.hq_country}, {sc.horizon.periods[-1]})")
    for col in ("id", "vendor", "bf16 TF", "fp8 TF", "fp4 TF", "mem GB", "TB/s", "TDP W", "US$", "home", "abroad"):
        t.add_column(col)
    home = ds.site_country == sc.operator.hq_country
    for c in sc.accelerators:
        st = ds.export_status.sel(chip=c.id, period=last).values
        h_st = sorted({_STATUS[int(v)] for v in st[home.values]}) or ["-"]
        a_st = sorted({_STATUS[int(v)] for v in st[~home.values]}) or ["-"]
        t.add_row(c.id, c.vendor, _fmt(c.tflops.get("bf16", np.nan)), _fmt(c.tflops.get("fp8", np.nan)),
                  _fmt(c.tflops.get("fp4", np.nan)), _fmt(c.memory_gb, 0 if c.memory_gb >= 1 else 3),
                  _fmt(c.mem_bw_tbps or np.nan, 2), _fmt(c.tdp_w), _fmt(c.unit_price_usd),
                  "/".join(h_st), "/".join(a_st))
    console.print(t)


def _models(world: World, console: Console) -> None:
    """Model architectures."""
    sc = world.scenario
    t = Table(title="Models")
    for col in ("id", "attention", "params (B)", "active (B)", "layers", "experts", "KV KiB/token", "in", "out"):
        t.add_column(col)
    for m in sc.models:
        t.add_row(m.id, m.attention, _fmt(m.total_params / 1e9, 1), _fmt(m.active_params / 1e9, 1), str(m.layers),
                  f"{m.experts_per_token}/{m.experts}" if m.experts else "-",
                  _fmt(m.kv_bytes_per_token("bf16") / 1024, 1), ",".join(m.modalities_in), ",".join(m.modalities_out))
    console.print(t)


def _workloads(world: World, console: Console) -> None:
    """Workload classes and their SLOs."""
    sc = world.scenario
    t = Table(title="Workload classes")
    for col in ("id", "kind", "TTFT s", "TPOT s", "RTT budget ms", "deadline h", "in/out tokens"):
        t.add_column(col)
    for w in sc.workloads:
        t.add_row(w.id, w.kind, _fmt(w.ttft_s or np.nan, 2), _fmt(w.tpot_s or np.nan, 3),
                  _fmt(w.rtt_budget_ms or np.nan), _fmt(w.deadline_h or np.nan), f"{w.input_tokens}/{w.output_tokens}")
    console.print(t)


def _demand(world: World, console: Console) -> None:
    """Demand zones, their coverage of world population, tokens per day and the largest zones."""
    sc = world.scenario
    ds = world.ds
    kinds = Counter(z.kind for z in sc.demand.zones)
    world_pop = sum(c.population for c in countries().values())
    covered = float(ds.zone_population.sum())
    console.print(
        f"[bold]Demand zones[/bold]: {len(sc.demand.zones)} ({kinds['country']} countries, {kinds['metro']} metros) "
        f"covering {covered / 1e9:.2f}B people = {covered / world_pop:.1%} of world population "
        f"({world_pop / 1e9:.2f}B in GeoNames' country table); {float(ds.zone_users.sum()) / 1e6:,.0f}M active users"
    )
    per_p = ds.demand_tokens_per_h.sum(dim=("zone", "model", "workload", "hour"))
    console.print("tokens/day: " + "; ".join(f"{p}: {float(v) / 1e12:,.2f}T" for p, v in
                                              zip(sc.horizon.periods, per_p.values, strict=True)))
    t = Table(title="Largest demand zones (first period)")
    for col in ("zone", "kind", "population (M)", "users (M)", "UTC offset", "residency rule", "allowed sites"):
        t.add_column(col)
    tokens = ds.demand_tokens_per_h.isel(period=0).sum(dim=("model", "workload", "hour"))
    for zid in tokens.sortby(tokens, ascending=False).zone.values[:12]:
        z = ds.sel(zone=zid)
        t.add_row(str(zid), str(z.zone_kind.values), _fmt(float(z.zone_population) / 1e6, 1),
                  _fmt(float(z.zone_users) / 1e6, 2), f"{float(z.zone_utc_offset_h):+g}",
                  str(z.residency_rule.values) or "default", str(int(z.residency.sum())))
    console.print(t)


def _policies(world: World, console: Console) -> None:
    """Policy and programme counts."""
    sc = world.scenario
    p = sc.programme
    console.print(
        f"[bold]Policies[/bold]: {len(sc.policies.residency)} residency rules, {len(sc.policies.export)} export rules, "
        f"{len(sc.policies.screening)} screening regimes; renewable target {sc.policies.renewable_target}. "
        f"[bold]Programme[/bold]: {p.free_tokens / 1e9:g}B free tokens, US${p.credits_usd:,.0f} credits per start-up."
    )


def show_world(world: World, console: Console) -> None:
    """Print the scenario as readable tables: regions, new sites, chips, models, workloads, demand, policies."""
    for part in (_header, _regions, _candidates, _accelerators, _models, _workloads, _demand, _policies):
        part(world, console)
