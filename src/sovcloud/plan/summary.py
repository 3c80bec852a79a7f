"""What a plan means: independent checks, shortfall explanations in words, and the terminal summary.

Checks recompute, from the plan's arrays and the compiled world (not from the model), that no
served flow crosses residency or the latency budget and that no chip was bought where export
control or site availability forbids it.

Shortfall explanations need no IIS: for each (country, workload, period) with unserved demand the
sites that could serve it (residency and RTT budget) are examined for the limits that bind there:
not open yet (lead time, screening), power cap reached, no exportable chip that runs the model,
chip supply cap reached, period or total budget spent; their shadow prices (duals of the LP with
the plan's integer decisions fixed) rank them. If nothing binds, serving costs more than the
unserved-demand penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from sovcloud.geo import countries
from sovcloud.plan.make import Plan
from sovcloud.plan.solver import evaluate
from sovcloud.world.compiled import World

__all__ = ["Checks", "check_plan", "explain_shortfalls", "latency_percentiles", "objective_parts", "print_summary",
           "renewable_misses", "served_shares", "zone_continents"]

CONTINENTS = {"AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America", "AF": "Africa",
              "OC": "Oceania", "AN": "Antarctica"}


@dataclass(frozen=True)
class Checks:
    residency_violations: int
    latency_violations: int
    export_violations: int
    power_violations: int
    budget_ok: bool

    @property
    def ok(self) -> bool:
        return not (self.residency_violations or self.latency_violations or self.export_violations
                    or self.power_violations) and self.budget_ok


def check_plan(plan: Plan) -> Checks:
    """Independent re-check of the plan against the compiled world's masks."""
    a, ds, d = plan.arrays, plan.world.ds, plan.inputs.ds
    served = a.served_mtok_day.sum("model") > 1e-9  # [zone, site, workload, period]
    residency = int((served & ~ds.residency).sum())
    budget_ms = ds.workload_rtt_budget_ms.fillna(np.inf)
    latency = int((served & (ds.rtt_ms > budget_ms + 1e-9)).sum())
    bought = a.servers_bought > 0
    export = int((bought & ~(ds.export_allowed.transpose("site", "chip", "period") & ds.site_available)).sum())
    power = int(((a.power_used_mw > a.power_cap_mw + 1e-6) & ds.site_available).sum())
    spend = a.capex_servers_musd + a.capex_sites_musd
    budget_ok = bool((spend <= d.budget + 1e-6).all()) and float(spend.sum()) <= d.attrs["budget_total"] + 1e-6
    return Checks(residency, latency, export, power, budget_ok)


def zone_continents(world: World) -> NDArray[np.str_]:
    """The continent name of each demand zone of ``world`` ("?" where its country is not known)."""
    table = countries()
    out: NDArray[np.str_] = np.array([CONTINENTS.get(table[str(c)].continent, "?") if str(c) in table else "?"
                                      for c in world.ds.zone_country.values])
    return out


def served_shares(plan: Plan) -> xr.Dataset:
    """Served share of demand by workload and period, and by continent and period."""
    a = plan.arrays
    served = a.served_mtok_day.sum(["site", "model"])  # [zone, workload, period]
    unserved = a.unserved_mtok_day.sum("model")
    cont = zone_continents(plan.world)
    total = served + unserved
    by_w = served.sum("zone") / total.sum("zone").where(total.sum("zone") > 0)
    groups = xr.DataArray(cont, dims="zone", name="continent")
    demand_c = total.sum("workload").groupby(groups).sum()
    by_c = (served.sum("workload").groupby(groups).sum() / demand_c.where(demand_c > 0))
    by_c = by_c.where(demand_c.sum("period") > 0, drop=True)  # continents with no demand (Antarctica)
    return xr.Dataset({"by_workload": by_w, "by_continent": by_c})


def latency_percentiles(plan: Plan, qs: tuple[float, ...] = (0.5, 0.95)) -> dict[str, list[float]]:
    """Token-weighted RTT percentiles (ms) of served demand per workload (all periods)."""
    a, ds = plan.arrays, plan.world.ds
    rtt = ds.rtt_ms.values  # [zone, site]
    out: dict[str, list[float]] = {}
    for w in a.workload.values:
        weights = a.served_mtok_day.sel(workload=w).sum(["model", "period"]).values  # [zone, site]
        mask = weights > 1e-12
        if not mask.any():
            out[str(w)] = [float("nan")] * len(qs)
            continue
        vals, wts = rtt[mask], weights[mask]
        order = np.argsort(vals)
        cum = np.cumsum(wts[order]) / wts.sum()
        out[str(w)] = [float(vals[order][np.searchsorted(cum, q)]) for q in qs]
    return out


def _dual(plan: Plan, name: str) -> xr.DataArray | None:
    duals = plan.result.duals
    return duals.get(name)


def renewable_misses(plan: Plan) -> list[dict[str, float]]:
    """Per period with a renewable target: the target, the share reached and the MWh short (0 when met)."""
    a, d, r = plan.arrays, plan.inputs.ds, plan.result
    gap = r.values.get("renewable_shortfall")
    out = []
    for p in d.period.values:
        target = float(d.renewable_target.sel(period=p))
        if target <= 0:
            continue
        energy = float(a.energy_mwh.sel(period=p).sum())
        reached = float(a.renewable_mwh.sel(period=p).sum()) / energy if energy > 0 else 1.0
        short = float(gap.sel(period=p)) if gap is not None and p in gap.period.values else 0.0
        out.append({"period": int(p), "target": target, "reached": reached, "shortfall_mwh": max(short, 0.0)})
    return out


def explain_shortfalls(plan: Plan, threshold: float = 0.01, limit: int = 25) -> list[str]:
    """Sentences naming short (country, workload, period) and the limits that bind (see module doc), after
    the renewable targets missed."""
    misses = [f"renewable target {m['period']}: {m['target']:.0%} asked, {m['reached']:.1%} reached "
              f"({m['shortfall_mwh'] / 1e3:,.1f} GWh short): the sites' renewable shares (renewable_max) cannot "
              "cover more of their energy" for m in renewable_misses(plan) if m["shortfall_mwh"] > 1e-3]
    return misses + _demand_shortfalls(plan, threshold, limit)


def _demand_shortfalls(plan: Plan, threshold: float, limit: int) -> list[str]:  # Length: one pass of reasons
    """The unserved (country, workload, period) triples with the limits that bind there."""
    a, ds, d = plan.arrays, plan.world.ds, plan.inputs.ds
    sc = plan.scenario
    served = a.served_mtok_day.sum(["site", "model"])
    unserved = a.unserved_mtok_day.sum("model")
    country = xr.DataArray(ds.zone_country.values, dims="zone", name="country")
    s_c = served.groupby(country).sum()
    u_c = unserved.groupby(country).sum()
    share = u_c / (s_c + u_c).where((s_c + u_c) > 0)
    power_dual = _dual(plan, "power")
    budget_dual = _dual(plan, "budget_period")
    spend = a.capex_servers_musd + a.capex_sites_musd
    supply_used = a.servers_bought.sum("site")
    items: list[tuple[float, str]] = []
    names = countries()
    for cc in share.country.values:
        for w in share.workload.values:
            for p in share.period.values:
                s = float(share.sel(country=cc, workload=w, period=p))
                if not np.isfinite(s) or s < threshold:
                    continue
                amount = float(u_c.sel(country=cc, workload=w, period=p))
                zones = np.flatnonzero(ds.zone_country.values == cc)
                budget = float(ds.workload_rtt_budget_ms.sel(workload=w))
                allowed = ds.residency.values[zones].any(axis=0)
                near = (ds.rtt_ms.values[zones] <= (budget if np.isfinite(budget) else np.inf)).any(axis=0)
                feasible = allowed & near
                label = f"{names[str(cc)].name if str(cc) in names else cc} {w} {p}: {s:.0%} unserved"
                reasons: list[str] = []
                if not allowed.any():
                    rule = str(ds.residency_rule.values[zones[0]]) or "the default rule"
                    reasons.append(f"residency ({rule}) allows no site of the operator")
                elif not feasible.any():
                    reasons.append(f"no site that residency allows is within the {budget:.0f} ms RTT budget "
                                   f"(nearest allowed: {float(ds.rtt_ms.values[zones][:, allowed].min()):.0f} ms)")
                else:
                    sites = ds.site.values[feasible]
                    avail = ds.site_available.sel(site=sites, period=p).values
                    if not avail.any():
                        reasons.append("every feasible site is closed or not yet open in this period: "
                                       + ", ".join(str(x) for x in sites[:4]))
                    at_cap = []
                    for sid in sites[avail]:
                        used = float(a.power_used_mw.sel(site=sid, period=p))
                        cap = float(a.power_cap_mw.sel(site=sid, period=p))
                        if cap <= 0 or used >= 0.99 * cap:
                            dual = float(power_dual.sel(site=sid, period=p)) if power_dual is not None \
                                and sid in power_dual.site.values else float("nan")
                            price = f", shadow price US${abs(dual) * 1e6:,.0f}/MW-yr" if np.isfinite(dual) else ""
                            at_cap.append(f"{sid} {cap:.0f} MW{price}")
                    if at_cap and len(at_cap) == int(avail.sum()):
                        reasons.append(f"every feasible site is at its power cap ({'; '.join(at_cap[:3])})")
                    elif at_cap:
                        reasons.append(f"power cap reached at {'; '.join(at_cap[:3])}")
                    models = [m for m in a.model.values if float(a.unserved_mtok_day.sel(
                        zone=ds.zone.values[zones], workload=w, period=p, model=m).sum()) > 0]
                    for m in models if avail.any() else []:
                        runnable = (d.cap.sel(model=m, workload=w) > 0).values
                        exp = ds.export_allowed.sel(site=sites[avail], period=p).values[runnable]
                        if not exp.any():
                            reasons.append(f"export control allows no chip that runs {m} at "
                                           + ", ".join(str(x) for x in sites[avail][:3]))
                    sup = d.supply_servers.sel(period=p)
                    hit = [str(c) for c in d.chip.values if np.isfinite(float(sup.sel(chip=c)))
                           and float(supply_used.sel(chip=c, period=p)) >= 0.99 * float(sup.sel(chip=c))]
                    if hit:
                        reasons.append(f"supply cap reached for {', '.join(hit)}")
                    if float(spend.sel(period=p)) >= 0.99 * float(d.budget.sel(period=p)):
                        bd = float(budget_dual.sel(period=p)) if budget_dual is not None else float("nan")
                        reasons.append(f"the {p} budget is spent (US${float(d.budget.sel(period=p)) / 1e3:,.1f}B"
                                       + (f", shadow price {abs(bd):.2f} per US$" if np.isfinite(bd) else "") + ")")
                    if float(spend.sum()) >= 0.99 * float(d.attrs["budget_total"]):
                        reasons.append(f"the total budget is spent (US${d.attrs['budget_total'] / 1e3:,.1f}B)")
                    if not reasons:
                        reasons.append(f"serving it costs more than the unserved penalty "
                                       f"(US${sc.planning.unserved_penalty_usd_per_mtok:g} per M tokens)")
                items.append((amount, f"{label} ({amount * 365 / 1e6:,.2f}T tokens/yr): " + "; ".join(reasons)))
    items.sort(key=lambda t: -t[0])
    return [text for _, text in items[:limit]]


def print_summary(plan: Plan, console: Console, greedy: Plan | None = None) -> None:
    """The terminal summary of a plan (and its saving against the greedy baseline)."""
    a, d = plan.arrays, plan.inputs.ds
    sc = plan.scenario
    periods = plan.inputs.periods
    console.print(f"[bold]Plan for {sc.name}[/bold]" + (f" under shocks {', '.join(sc.applied_shocks)}"
                                                        if sc.applied_shocks else ""))
    console.print(_objective_line(plan), highlight=False)

    t = Table(title="Sites built, leased or expanded (new IT MW, cumulative)")
    for col in ["site", "kind", *[str(p) for p in periods], "opened"]:
        t.add_column(col)
    for s in d.site.values:
        b = a.built_mw.sel(site=s)
        if float(b.max()) <= 1e-6:
            continue
        opened = [str(p) for p in periods if float(a.opened.sel(site=s, period=p)) > 0.5]
        kinds = ",".join(o.kind for o in sc.site(str(s)).options)
        t.add_row(str(s), kinds, *[f"{float(x):.1f}" for x in b.values], opened[0] if opened else "-")
    console.print(t)

    last = periods[-1]
    fleet = a.fleet_chips.sel(period=last)
    used_sites = [s for s in d.site.values if float(fleet.sel(site=s).sum()) > 0]
    used_chips = [c for c in d.chip.values if float(fleet.sel(chip=c).sum()) > 0]
    t = Table(title=f"Accelerators per site in {last} (chips)")
    for col in ["site", *map(str, used_chips), "power MW used/cap"]:
        t.add_column(col)
    for s in used_sites:
        used = float(a.power_used_mw.sel(site=s, period=last))
        cap = float(a.power_cap_mw.sel(site=s, period=last))
        t.add_row(str(s), *[f"{int(fleet.sel(site=s, chip=c)):,}" for c in used_chips], f"{used:.1f}/{cap:.0f}")
    console.print(t)

    t = Table(title="Spend per period (US$M, undiscounted) against the budget")
    for col in ("period", "servers", "sites", "capex", "budget", "opex+lease", "energy", "renewables"):
        t.add_column(col)
    for p in periods:
        capex = float(a.capex_servers_musd.sel(period=p) + a.capex_sites_musd.sel(period=p))
        t.add_row(str(p), f"{float(a.capex_servers_musd.sel(period=p)):,.1f}",
                  f"{float(a.capex_sites_musd.sel(period=p)):,.1f}", f"{capex:,.1f}",
                  f"{float(d.budget.sel(period=p)):,.0f}", f"{float(a.opex_lease_musd.sel(period=p)):,.1f}",
                  f"{float(a.energy_musd.sel(period=p)):,.1f}", f"{float(a.renewables_musd.sel(period=p)):,.1f}")
    console.print(t)

    shares = served_shares(plan)
    t = Table(title="Share of demand served")
    for col in ["", *map(str, periods)]:
        t.add_column(col)
    for w in shares.workload.values:
        t.add_row(f"workload {w}", *[f"{float(v):.1%}" for v in shares.by_workload.sel(workload=w).values])
    for c in shares.continent.values:
        t.add_row(str(c), *[f"{float(v):.1%}" for v in shares.by_continent.sel(continent=c).values])
    console.print(t)

    lat = latency_percentiles(plan)
    console.print("latency of served demand (RTT p50 / p95): "
                  + "; ".join(f"{w} {v[0]:.0f} / {v[1]:.0f} ms" for w, v in lat.items()))
    checks = check_plan(plan)
    console.print(f"checks: residency violations {checks.residency_violations}, latency violations "
                  f"{checks.latency_violations}, export violations {checks.export_violations}, power violations "
                  f"{checks.power_violations}, budget {'held' if checks.budget_ok else 'EXCEEDED'}")
    energy = a.energy_mwh.sum("site")
    ren = a.renewable_mwh.sum("site")
    console.print("energy / renewable share / carbon / water: " + "; ".join(
        f"{p}: {float(energy.sel(period=p)) / 1e3:,.0f} GWh / {float(ren.sel(period=p) / energy.sel(period=p)):.0%} / "
        f"{float(a.carbon_t.sum('site').sel(period=p)) / 1e3:,.1f} kt CO2e / "
        f"{float(a.water_m3.sum('site').sel(period=p)) / 1e3:,.0f} thousand m3" for p in periods))
    if greedy is not None:
        console.print(_saving(plan, greedy))
    reasons = explain_shortfalls(plan)
    if reasons:
        console.print("[bold]Shortfalls[/bold] (largest first):")
        for line in reasons:
            console.print(f"  - {line}", markup=False, highlight=False)


def _objective_line(plan: Plan) -> str:
    """The solver line: status, the objective in dollars (TCO and penalties), bound, gap, time."""
    r = plan.result
    gap = "n/a" if not np.isfinite(r.gap) else f"{r.gap:.2%}"
    tco, pen = objective_parts(plan)
    solve = f"solve {r.timings.get('total_s', 0):.1f} s"
    if plan.built_model.objective == "served":
        return (f"solver: {r.source}, HiGHS status '{r.status}'; objective 'served' (unserved demand first): "
                f"penalties US${pen:,.1f}M, discounted TCO US${tco:,.1f}M; the solver's value {r.objective:,.1f} "
                f"(1,000 x penalties + 0.1 x TCO), bound {r.bound:,.1f}, gap {gap}; {solve}")
    return (f"solver: {r.source}, HiGHS status '{r.status}'; objective US${r.objective:,.1f}M (discounted TCO "
            f"US${tco:,.1f}M + penalties US${pen:,.1f}M), bound US${r.bound:,.1f}M, gap {gap}; {solve}")


def objective_parts(plan: Plan) -> tuple[float, float]:
    """(discounted TCO, penalties) of the objective at the plan's solution, US$M: the parts the solver weighed."""
    bm, r = plan.built_model, plan.result
    tco = evaluate(bm.model, r.values, bm.cost) if bm.cost is not None else float("nan")
    pen = evaluate(bm.model, r.values, bm.penalty) if bm.penalty is not None else 0.0
    return tco, pen


def total_cost_musd(plan: Plan) -> float:
    """Discounted cost of the plan without penalties (US$M)."""
    a, d = plan.arrays, plan.inputs.ds
    annual = a.opex_lease_musd + a.energy_musd + a.renewables_musd
    capex = a.capex_servers_musd + a.capex_sites_musd
    return float(((annual + capex) * d.df).sum())


def _saving(plan: Plan, greedy: Plan) -> str:
    def served(p: Plan) -> float:
        return float(p.arrays.served_mtok_day.sum())

    c_opt, c_g = total_cost_musd(plan), total_cost_musd(greedy)
    s_opt, s_g = served(plan), served(greedy)
    per_opt, per_g = c_opt / max(s_opt, 1e-9), c_g / max(s_g, 1e-9)
    return (f"against the greedy baseline (nearest allowed site, cheapest chip): spend US${c_opt:,.0f}M vs "
            f"US${c_g:,.0f}M for {s_opt / max(s_g, 1e-9):.1%} of its served tokens; cost per served token "
            f"{1 - per_opt / per_g:.1%} lower" if per_g > 0 else "greedy baseline served nothing")
