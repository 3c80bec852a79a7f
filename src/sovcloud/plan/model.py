"""The buildout model: a mixed-integer linear program over named dimensions (linopy).

:func:`build_model` states the program (sets, variables, constraints, objective) and builds it
from :class:`~sovcloud.plan.inputs.PlanInputs`, one helper per variable block, constraint family
and objective; :func:`trim_idle_servers` improves a feasible plan's purchases for the solver.
Every variable exists only where its mask is true, so a forbidden pair never becomes a column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import linopy
import numpy as np
import pandas as pd
import xarray as xr

from sovcloud.plan.inputs import PlanInputs

__all__ = ["BIG_SUPPLY", "RENEWABLE_SHORTFALL_USD_PER_MWH", "BuiltModel", "build_model", "trim_idle_servers"]

Expr = linopy.LinearExpression | linopy.Variable
BIG_SUPPLY = 1e6  # servers; stands for "no supply cap"
#: price of each MWh by which the renewable target is missed: far above any renewable premium,
#: so the target binds whenever it can be met, and a miss shows as an explicit shortfall
RENEWABLE_SHORTFALL_USD_PER_MWH = 1000.0

#: (label, allowed sites, zone indices) of one residency group
ResidencyGroup = tuple[str, list[str], list[int]]


@dataclass(frozen=True)
class BuiltModel:
    model: linopy.Model
    inputs: PlanInputs
    objective: str
    residency_groups: list[ResidencyGroup]
    cost: linopy.LinearExpression | None = None  # discounted TCO, US$M (the objective's cost part)
    penalty: linopy.LinearExpression | None = None  # unserved demand and renewable shortfall, US$M


def _idx(name: str, values: object) -> pd.Index:
    return cast(pd.Index, pd.Index(values, name=name))  # type: ignore[call-overload]


def _var(m: linopy.Model, mask: xr.DataArray, name: str, **kwargs: object) -> linopy.Variable:
    """A variable over ``mask``'s coordinates that exists only where ``mask`` is true."""
    lower = xr.zeros_like(mask, dtype=float)
    return m.add_variables(lower=lower, mask=mask, name=name, **kwargs)  # type: ignore[arg-type]


def _step(x: Expr) -> linopy.LinearExpression:
    """``x[p] - x[p - 1]`` over periods (``x[-1] = 0``): what is added in each period."""
    return x - x.shift(period=1).fillna(0)


def build_model(pi: PlanInputs, *, objective: str = "cost", resilience_share: float | None = None,
                penalty_usd_per_mtok: float | None = None) -> BuiltModel:
    """Build the buildout MILP (absent slots propagate: linopy v1 semantics).

    Sets
        S sites, C chips, M demanded models, W workloads, P periods (years; b in P is a purchase
        period), T time slices of L hours, G_w demand groups of workload w (exactly merged zones,
        :mod:`sovcloud.plan.inputs`), R residency groups (zones with the same residency-allowed site
        set A_R). n_c chips per server of c, cap[m, c, w] Mtok/h per chip, life_c years, P_c and
        idle_c full and idle MW per chip (dyn_c = P_c - idle_c); step(x)[p] = x[p] - x[p - 1], x[-1] = 0.
    Variables (each exists only where its mask is true: a pair forbidden by residency, latency,
    export control or site availability never becomes a variable)
        servers[s, c, b] in Z+, <= supply[c, b]   servers of c bought at s in b (export-allowed,
                                                  hostable, site open in b, c runs a demanded model)
        installed_servers[s, c] >= 0              fixed at the installed count (no constant in the objective)
        built[s, p] in [0, cap_mw[s, p]]          IT MW available at s in p from its build/lease/expand options
        opened[s, p] in {0, 1}                    candidate site s (with an option) is open in p
        alloc[s, c, m, p] >= 0                    chips of c at s running m (a fleet can exist, s available, c runs m)
        use[s, c, m, w, p, t] >= 0                Mtok/h of (m, w) processed on chips c at s (alloc, cap > 0)
        flow_w[g, s, m, p, t] >= 0                Mtok/h of group g's demand served at s (batch: Mtok/day, no t)
        short_w[g, m, p, t] >= 0                  unserved demand (penalised), so a plan always exists
        renew[s, p] >= 0                          renewable MWh contracted at s
        renewable_shortfall[p] >= 0               MWh by which the renewable target is missed (target periods)
    Constraints
        fleet[s, c, p] = installed_servers[s, c] + sum_{b <= p < b + life_c} servers[s, c, b]
        facility energy E[s, p] = PUE_s (8760 sum_c n_c idle_c fleet + 365 L sum_{c,m,w,t} dyn_c use / cap) MWh
        capex[b] = sum_{s,c} capex_server[c, s, b] servers[s, c, b] + sum_s capex_mw_s step(built)[s, b]
                   + sum_s fixed_s step(opened)[s, b]
        demand      sum_s flow_w + short_w = demand_w                                       (g, m, p, t)
        routing     sum_g flow_w[g, s] = sum_c use[s, c, m, w]  (batch: = L sum_{c,t} use)  (s, m, w, p, t)
        capacity    sum_w peak[s, m, w, p, t] use[s, c, m, w, p, t] / cap[m, c, w] <= alloc[s, c, m, p]
                    (peak: the busiest hour of the slice over its mean for interactive work, 1 for batch)
        fleet       sum_m alloc[s, c, m, p] <= n_c fleet[s, c, p]
        power       sum_c n_c P_c fleet[s, c, p] <= installed_mw[s, p] + built[s, p]   (s available in p)
        options     built non-decreasing; built[s, p] <= cap_mw[s, p] opened[s, p] (candidates);
                    opened non-decreasing
        supply      sum_s servers[s, c, b] <= supply[c, b]                              (c with a finite cap)
        budget      capex[b] <= budget[b] (finite budgets);  sum_b capex[b] <= budget_total
        space       sum_c fleet[s, c, p] / rack_servers_c <= racks_s                    (where stated)
        water       WUE_s E[s, p] / PUE_s <= water_s                                     (where stated)
        renewables  renew[s, p] <= rmax_s E[s, p];
                    sum_s renew[s, p] + renewable_shortfall[p] >= target_p sum_s E[s, p]  (target_p > 0)
        resilience  for every R with |A_R| >= 2, demanded m, and p where >= 2 sites of A_R are available,
                    and every k in A_R:
                    sum_{s in A_R \\ k} sum_c cap[m, c, w_m] alloc[s, c, m, p] >= rho served_R[m, p, t]
                    (w_m: m's main workload; auxiliary peak_r / capacity_r variables keep rows short)
    Objective (US$M, discounted to the first period: df_p, and rdf_p = sum_{q >= p} df_q)
        cost      = sum servers capex_server crf_c rdf_b + sum step(built) capex_mw_s crf_s rdf_p
                    + sum built annual_mw_s df_p + sum E energy_price_s df_p + sum renew premium_s df_p
                    + sum step(opened) fixed_s crf_s rdf_p
        unserved  = sum_w 365 pen short_w df_p (Mtok/day for batch; x L for Mtok/h)
                    + sum_p (US$1,000/MWh) renewable_shortfall[p] df_p
        objective "cost": minimise cost + unserved;
                  "served": minimise 1e3 unserved + 1e-1 cost (unserved first, cost as a 1e-4 tie-break).
    """
    with linopy.options as options:
        options(semantics="v1")
        return _build(pi, objective, resilience_share, penalty_usd_per_mtok)


def _build(pi: PlanInputs, objective: str, resilience_share: float | None,
           penalty_usd_per_mtok: float | None) -> BuiltModel:
    sc = pi.world.scenario
    d = pi.ds
    rho = sc.planning.resilience_share if resilience_share is None else resilience_share
    pen = (sc.planning.unserved_penalty_usd_per_mtok if penalty_usd_per_mtok is None else penalty_usd_per_mtok) / 1e6
    m = linopy.Model(force_dim_names=True)
    demanded = sorted({str(x) for dem in pi.demand.values() for x in dem.ds.model.values})
    d_m = d.sel(model=demanded)

    servers, s_mask, fleet = _add_fleet(m, d, d_m.cap)
    built, opened = _add_site_options(m, d)
    alloc, use = _add_allocation(m, d, d_m, s_mask, fleet)
    penalty_terms, served_by_group = _add_demand(m, pi, use, pen)
    _add_power_and_supply(m, d, servers, fleet, built)
    _add_budget(m, d, _capex(d, servers, built, opened))
    energy = _energy(d, d_m, fleet, use, pi.slice_hours)
    renew = _add_renewable_cap(m, d, energy)
    _add_space_and_water(m, d, fleet, energy)
    renew_gap = _add_renewable_target(m, d, renew, energy)
    groups = _residency_groups(pi)
    if rho > 0:
        _add_resilience(m, pi, alloc, served_by_group, groups, rho, demanded)

    cost = _cost(d, servers, built, opened, energy, renew)
    if renew_gap is not None:
        penalty_terms.append((renew_gap * (RENEWABLE_SHORTFALL_USD_PER_MWH / 1e6)
                              * d.df.sel(period=renew_gap.coords["period"].values)).sum())
    penalty = _set_objective(m, objective, cost, penalty_terms)
    return BuiltModel(model=m, inputs=pi, objective=objective, residency_groups=groups,
                      cost=_expr(cost), penalty=None if penalty is None else _expr(penalty))


# ------------------------------------------------------------------------------ variable blocks


def _add_fleet(m: linopy.Model, d: xr.Dataset, cap: xr.DataArray) -> tuple[linopy.Variable, xr.DataArray, Expr]:
    """``servers`` and the fixed ``installed_servers``; returns (servers, their mask, fleet [site, chip, period])."""
    usable = (cap > 0).any(["model", "workload"])  # chip can run some demanded model
    s_mask = (d.export_allowed & d.site_available & usable & d.hostable).rename(period="bought")
    supply = d.supply_servers.rename(period="bought")
    ub = np.floor(supply).where(np.isfinite(supply), BIG_SUPPLY).broadcast_like(s_mask)
    servers = m.add_variables(lower=0, upper=ub.transpose("site", "chip", "bought"), integer=True,
                              mask=s_mask.transpose("site", "chip", "bought"), name="servers")
    installed = d.installed_servers
    # installed servers: a variable fixed at the installed count, so no constant enters the objective
    fixed_fleet = _var(m, installed > 0, "installed_servers").fillna(0)
    m.add_constraints(fixed_fleet == installed, name="installed_servers", mask=installed > 0)
    fleet = (servers.fillna(0) * d.alive).sum("bought") + fixed_fleet
    return servers, s_mask, fleet


def _add_site_options(m: linopy.Model, d: xr.Dataset) -> tuple[Expr, linopy.Variable | None]:
    """``built`` (non-decreasing) and, for candidate sites, ``opened`` (non-decreasing, gating built)."""
    has_option = d.option_cap_mw.max("period") > 0
    built_v = m.add_variables(lower=0, upper=d.option_cap_mw, mask=has_option.broadcast_like(d.option_cap_mw),
                              name="built")
    built = built_v.fillna(0)
    m.add_constraints(_step(built) >= 0, name="built_monotone")
    cand = (d.candidate & has_option).values
    if not cand.any():
        return built, None
    cand_sites = d.site.values[cand]
    opened = m.add_variables(binary=True, coords=[_idx("site", cand_sites), _idx("period", d.period.values)],
                             name="opened")
    m.add_constraints(built.sel(site=cand_sites) - d.option_cap_mw.sel(site=cand_sites) * opened <= 0,
                      name="open_before_use")
    m.add_constraints(_step(opened) >= 0, name="opened_monotone")
    return built, opened


def _add_allocation(m: linopy.Model, d: xr.Dataset, d_m: xr.Dataset, s_mask: xr.DataArray,
                    fleet: Expr) -> tuple[Expr, Expr]:
    """``alloc`` within the fleet and ``use`` within the allocated capacity; returns (alloc, use)."""
    cap = d_m.cap
    fleet_possible = (s_mask.rename(bought="period").cumsum("period") > 0) | (d.installed_servers > 0)
    a_mask = fleet_possible & d.site_available & (cap > 0).any("workload")
    alloc = _var(m, a_mask.transpose("site", "chip", "model", "period"), "alloc").fillna(0)
    m.add_constraints(alloc.sum("model") - d.server_chips * fleet <= 0, name="fleet")
    u_mask = (a_mask & (cap > 0)).broadcast_like(d.slice)
    use = _var(m, u_mask.transpose("site", "chip", "model", "workload", "period", "slice"), "use").fillna(0)
    # interactive use held at its slice's busiest hour (peak; 1 for batch), see sovcloud.plan.inputs
    m.add_constraints((use * (d_m.inv_cap * d_m.peak)).sum("workload") - alloc <= 0, name="capacity")
    return alloc, use


def _add_demand(m: linopy.Model, pi: PlanInputs, use: Expr, pen: float) -> tuple[list[Expr], dict[str, Expr]]:
    """``flow_w`` and ``short_w`` per workload with their demand and routing rows.

    Returns the unserved-penalty terms (US$M, discounted) and the served rate per workload:
    [group, model, period, slice] in Mtok/h (batch: its daily mean, [group, model, period]).
    """
    d = pi.ds
    L = pi.slice_hours
    penalty_terms: list[Expr] = []
    served_by_group: dict[str, Expr] = {}
    for w_id, dem in pi.demand.items():
        g = dem.ds
        route = g.route & d.site_available
        use_w = use.sel(workload=w_id, model=g.model.values)
        if dem.kind == "batch":
            day = g.demand.sum("slice") * L  # Mtok/day
            mask = (route & (day > 0)).transpose("group", "site", "model", "period")
            flow = _var(m, mask, f"flow_{w_id}").fillna(0)
            short = _var(m, day > 0, f"short_{w_id}").fillna(0)
            m.add_constraints(flow.sum("site") + short == day, name=f"demand_{w_id}")
            m.add_constraints(flow.sum("group") - L * use_w.sum(["chip", "slice"]) == 0, name=f"route_{w_id}")
            penalty_terms.append((short * (365.0 * pen) * d.df).sum())
            served_by_group[w_id] = flow.sum("site") / 24.0  # mean Mtok/h, [group, model, period]
        else:
            mask = (route & (g.demand > 0)).transpose("group", "site", "model", "period", "slice")
            flow = _var(m, mask, f"flow_{w_id}").fillna(0)
            short = _var(m, g.demand > 0, f"short_{w_id}").fillna(0)
            m.add_constraints(flow.sum("site") + short == g.demand, name=f"demand_{w_id}")
            m.add_constraints(flow.sum("group") - use_w.sum("chip") == 0, name=f"route_{w_id}")
            penalty_terms.append((short * (365.0 * L * pen) * d.df).sum())
            served_by_group[w_id] = flow.sum("site")  # [group, model, period, slice]
    return penalty_terms, served_by_group


# ---------------------------------------------------------------------------- constraint families


def _add_power_and_supply(m: linopy.Model, d: xr.Dataset, servers: linopy.Variable, fleet: Expr,
                          built: Expr) -> None:
    """Fleet power within installed + built MW at available sites; purchases within finite supply caps."""
    server_mw = d.server_chips * d.chip_full_mw
    m.add_constraints((fleet * server_mw).sum("chip") - built <= d.installed_mw, name="power", mask=d.site_available)
    finite = np.isfinite(d.supply_servers.values).any(axis=1)
    if finite.any():
        chips = d.chip.values[finite]
        sup = d.supply_servers.rename(period="bought").sel(chip=chips)
        m.add_constraints(servers.sel(chip=chips).sum("site") <= sup, name="supply")


def _capex(d: xr.Dataset, servers: linopy.Variable, built: Expr, opened: linopy.Variable | None) -> Expr:
    """Undiscounted capital spend per period [period]: servers, new MW and site openings."""
    capex: Expr = (servers * d.capex_server.rename(period="bought")).sum(["site", "chip"]).rename(bought="period") \
        + (_step(built) * d.capex_per_mw).sum("site")
    if opened is not None:
        cs = opened.coords["site"].values
        capex = capex + (_step(opened) * d.fixed_capex.sel(site=cs)).sum("site")
    return capex


def _add_budget(m: linopy.Model, d: xr.Dataset, capex: Expr) -> None:
    """Capex within each finite period budget and within the total budget."""
    periods = d.period.values
    finite_b = np.isfinite(d.budget.values)
    if finite_b.any():
        m.add_constraints(capex.sel(period=periods[finite_b]) <= d.budget.sel(period=periods[finite_b]),
                          name="budget_period")
    m.add_constraints(capex.sum("period") <= d.attrs["budget_total"], name="budget_total")


def _energy(d: xr.Dataset, d_m: xr.Dataset, fleet: Expr, use: Expr, L: float) -> Expr:
    """Facility energy per year [site, period] in MWh: idle power of the fleet plus busy chip-hours."""
    idle_mw = d.server_chips * d.chip_idle_mw
    dyn_mw = (d.chip_full_mw - d.chip_idle_mw)
    busy = (use * d_m.inv_cap).sum(["model", "workload", "slice"]) * (365.0 * L)  # chip-hours per year
    energy: Expr = ((fleet * idle_mw * 8760.0).sum("chip") + (busy * dyn_mw).sum("chip")) * d.pue
    return energy


def _add_renewable_cap(m: linopy.Model, d: xr.Dataset, energy: Expr) -> linopy.Variable:
    """``renew`` within each site's renewable share of its energy."""
    renew = m.add_variables(lower=0, coords=[_idx("site", d.site.values), _idx("period", d.period.values)],
                            name="renew")
    m.add_constraints(renew - d.renewable_max * energy <= 0, name="renewable_max")
    return renew


def _add_space_and_water(m: linopy.Model, d: xr.Dataset, fleet: Expr, energy: Expr) -> None:
    """Rack space and water caps, where an option states one."""
    sites = d.site.values
    has_space = np.isfinite(d.space_cap_racks.values)
    if has_space.any():
        ss = sites[has_space]
        m.add_constraints((fleet.sel(site=ss) / d.rack_servers).sum("chip") <= d.space_cap_racks.sel(site=ss),
                          name="space")
    has_water = np.isfinite(d.water_cap_m3.values)
    if has_water.any():
        ws = sites[has_water]
        it_energy = energy.sel(site=ws) / d.pue.sel(site=ws)  # IT MWh; WUE is per IT kWh
        m.add_constraints(it_energy * d.wue.sel(site=ws) <= d.water_cap_m3.sel(site=ws), name="water")


def _add_renewable_target(m: linopy.Model, d: xr.Dataset, renew: linopy.Variable,
                          energy: Expr) -> linopy.Variable | None:
    """Each period's renewable target, met or missed by ``renewable_shortfall`` (None: no target)."""
    targets = d.renewable_target.values > 0
    if not targets.any():
        return None
    # a missed target is an explicit, heavily priced shortfall (MWh), never an infeasible plan
    tp = d.period.values[targets]
    renew_gap = m.add_variables(lower=0, coords=[_idx("period", tp)], name="renewable_shortfall")
    m.add_constraints(renew.sel(period=tp).sum("site") + renew_gap - d.renewable_target.sel(period=tp)
                      * energy.sel(period=tp).sum("site") >= 0, name="renewable_target")
    return renew_gap


def _residency_groups(pi: PlanInputs) -> list[ResidencyGroup]:
    """(label, allowed sites, zone indices) for each distinct residency row."""
    ds = pi.world.ds
    rows = ds.residency.values
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    out = []
    for gi, fi in enumerate(first):
        members = [int(i) for i in np.flatnonzero(inverse == gi)]
        rule = str(ds.residency_rule.values[fi]) or "default"
        out.append((f"{rule} ({len(members)} zones)", [str(x) for x in ds.site.values[rows[fi]]], members))
    return out


def _main_workloads(pi: PlanInputs) -> dict[str, str]:
    """Each demanded model's main workload: the one with the most demand of it (first on a tie)."""
    main: dict[str, tuple[float, str]] = {}
    for w_id, dem in pi.demand.items():
        for mod in dem.ds.model.values:
            amount = float(dem.ds.demand.sel(model=mod).sum())
            if amount > main.get(str(mod), (-1.0, ""))[0]:
                main[str(mod)] = (amount, w_id)
    return {mod: w_id for mod, (_, w_id) in main.items()}


def _add_resilience(m: linopy.Model, pi: PlanInputs, alloc: Expr, served: dict[str, Expr],
                    groups: list[ResidencyGroup], rho: float, demanded: list[str]) -> None:
    """Capacity left after losing any one site of a residency group covers rho x its served rate.

    A site's capacity for model m is counted at the rate of m's main workload (most demand).
    """
    d = pi.ds
    main = _main_workloads(pi)
    for gi, (_label, allowed, zones_in) in enumerate(groups):
        if len(allowed) < 2:
            continue
        for mod in demanded:
            total: Expr | None = None
            for w_id, dem in pi.demand.items():
                if mod not in dem.ds.model.values:
                    continue
                labels = dem.ds.group.values[np.unique(dem.zone_group[zones_in])]
                part = served[w_id].sel(group=labels, model=mod).sum("group")
                total = part if total is None else total + part
            if total is None:
                continue
            rate = d.cap.sel(model=mod, workload=main[mod])
            site_cap = (alloc.sel(site=allowed, model=mod) * rate).sum("chip")  # [site, period]
            # auxiliary totals keep each resilience row short (one term per site, not per flow)
            agg = m.add_variables(lower=0, coords=[d.period.to_index(), d.slice.to_index()], name=f"peak_r{gi}_{mod}")
            m.add_constraints(agg - total >= 0, name=f"served_r{gi}_{mod}")
            whole = m.add_variables(lower=0, coords=[d.period.to_index()], name=f"capacity_r{gi}_{mod}")
            m.add_constraints(whole - site_cap.sum("site") == 0, name=f"capacity_r{gi}_{mod}")
            # only where the group has two sites serving: with one, losing it leaves nothing by definition
            two = d.site_available.sel(site=allowed).sum("site") >= 2
            m.add_constraints(whole - site_cap - rho * agg >= 0, name=f"resilience_{gi}_{mod}",
                              mask=two.broadcast_like(d.slice))


# ------------------------------------------------------------------------------------ objective


def _cost(d: xr.Dataset, servers: linopy.Variable, built: Expr, opened: linopy.Variable | None, energy: Expr,
          renew: linopy.Variable) -> Expr:
    """Discounted cost (US$M): capex annuities over the remaining horizon, opex/lease, energy, renewables."""
    rdf = d.remaining_df
    cost: Expr = (servers * (d.capex_server * d.chip_crf * rdf).rename(period="bought")).sum() \
        + (_step(built) * (d.capex_per_mw * d.option_crf * rdf)).sum() \
        + (built * (d.annual_per_mw * d.df)).sum() \
        + (energy * (d.energy_price * d.df)).sum() \
        + (renew * (d.renewable_price * d.df)).sum()
    if opened is not None:
        cs = opened.coords["site"].values
        fixed_annuity = d.fixed_capex.sel(site=cs) * d.option_crf.sel(site=cs) * rdf
        cost = cost + (_step(opened) * fixed_annuity).sum()
    return cost


def _expr(x: Expr) -> linopy.LinearExpression:
    return x if isinstance(x, linopy.LinearExpression) else 1 * x


def _set_objective(m: linopy.Model, objective: str, cost: Expr, penalty_terms: list[Expr]) -> Expr | None:
    """Minimise cost + penalties, or (``served``) penalties first with cost as a tie-break; returns the penalties."""
    unserved: Expr | None = None
    for term in penalty_terms:
        unserved = term if unserved is None else unserved + term
    if objective == "served" and unserved is not None:
        m.add_objective(unserved * 1e3 + cost * 1e-1)
    else:
        m.add_objective(cost + unserved if unserved is not None else cost)
    return unserved


# ---------------------------------------------------------------------------------- improvement


def trim_idle_servers(bm: BuiltModel, values: dict[str, xr.DataArray]) -> dict[str, xr.DataArray]:
    """Drop servers a feasible plan leaves idle in every period they are alive (latest purchases first).

    With alloc fixed, fewer servers keep every constraint satisfied except possibly the renewable
    cap (energy falls), which the caller's re-solve restores; the cost only falls.
    """
    d = bm.inputs.ds
    servers = values["servers"].fillna(0).round()
    alloc = values["alloc"].fillna(0).sum("model")  # [site, chip, period]
    n = d.server_chips
    periods = d.period.values
    alive = d.alive
    fleet = (servers * alive).sum("bought") + d.installed_servers
    spare = np.floor((fleet * n - alloc.reindex_like(fleet).fillna(0)) / n + 1e-9).clip(min=0)
    out = servers.copy()
    for b in periods[::-1]:
        live = alive.sel(bought=b)
        room = spare.where(live).min("period")
        drop = np.minimum(out.sel(bought=b), room.fillna(0))
        out.loc[{"bought": b}] = out.sel(bought=b) - drop
        spare = spare - drop * live
    return {"servers": out}
