"""Planner inputs: the compiled world reduced to the arrays the optimisation model is built from.

Demand groups (per workload)
    Zones whose demand of one workload is interchangeable for the planner are merged exactly:
    same feasible site set (residency and the workload's RTT budget) and, except for batch
    (balanced per day), the same UTC offset (so the same daily profile). The objective does not
    depend on which zone of a group a token comes from, so the merged model has the same optimum;
    flows are split back to zones in proportion to demand.
Route pruning (large instances only)
    When the feasible (group, site) pairs exceed ``planning.max_route_pairs``, each group keeps
    only its K nearest feasible sites (K as large as the budget allows, at least 3). The plan is
    then optimal for the pruned model; ``routes_pruned_to`` records K (0 = exact model).
Time slices
    The representative day's 24 UTC hours are cut into ``T`` slices of ``L = 24 / T`` hours; demand
    in a slice is the mean rate over its hours (Mtok/h).
Peak within a slice (interactive work)
    ``peak[g, m, p, t]`` = the busiest hour's rate of group g in slice t over the slice's mean (1 for
    batch). The capacity rows hold each site's use at ``peak[s, m, w, p, t]``, the demand-weighted mean of
    the peaks of the groups expected there (each group's demand spread over its ``PEAK_SITES`` = 2 nearest
    feasible sites, where the router sends it first; a weighted mean of peaks bounds the peak of their sum):
    interactive work is sized for the busiest hour of a slice, while flows, energy and served tokens stay
    at the slice's mean.
Capacity per chip (the serving discipline of :mod:`sovcloud.world.serving`)
    Each (model m, chip c) runs one engine type at m's operating point: the batch cap under the strictest
    TTFT/TPOT targets of m's workloads at m's typical request shape, at the tensor-parallel degree with
    the best goodput per chip there. ``cap[m, c, w]`` = that engine's input + output tokens per second per
    chip at full occupancy for w's request shape (:meth:`~sovcloud.physics.serving.ServingPoint.tokens_per_s_per_chip`),
    in Mtok/h, x the utilisation planned for w: for interactive work the queueing headroom at w's TTFT
    target (Erlang C with bursty arrivals, ``planning.slo_tail`` and ``planning.burstiness``, at most
    ``planning.target_utilization``); for batch work, which the simulator and the gateway defer into
    capacity interactive work leaves free, ``1 - planning.batch_reserve``. An engine that meets no
    target serves batch work only.
Units: tokens in millions (Mtok), money in US$ millions, power in MW, energy in MWh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from sovcloud.physics.energy import it_power_mw
from sovcloud.physics.perf import Workload as PerfCase
from sovcloud.physics.perf import goodput_table
from sovcloud.policy.masks import add_months, decision_date, policy_dates
from sovcloud.world.compiled import World
from sovcloud.world.serving import deployment_service, model_services

__all__ = ["PEAK_SITES", "Demand", "PlanInputs", "crf", "plan_inputs"]

#: a group's demand is expected at this many of its nearest feasible sites when a site's peak factor is formed
PEAK_SITES = 2


def crf(rate: float, years: float) -> float:
    """Capital recovery factor: the annuity per dollar of capex over ``years`` at ``rate``."""
    if rate == 0:
        return 1.0 / years
    f = float((1.0 + rate) ** years)
    return rate * f / (f - 1.0)


@dataclass(frozen=True)
class Demand:
    """One workload's demand, clustered: zones with equal feasible site sets (and UTC offset) merged."""

    workload: str
    kind: str
    ds: xr.Dataset  # demand [group, model, period, slice] Mtok/h; route [group, site]; models with demand
    zone_group: NDArray[np.int64]  # zone index -> group index


@dataclass(frozen=True)
class PlanInputs:
    """Arrays over named dimensions (site, chip, model, workload, period, slice) + clustered demand."""

    world: World
    ds: xr.Dataset
    demand: dict[str, Demand]
    slice_hours: float

    @property
    def periods(self) -> list[int]:
        return [int(p) for p in self.ds.period.values]


def _groups(keys: NDArray[np.uint8], zones: NDArray[np.str_], pop: NDArray[np.float64]) -> tuple[
        NDArray[np.int64], list[str]]:
    """Group rows of ``keys`` that are equal; label each group by its most populous zone."""
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    labels = []
    for g in range(len(first)):
        members = np.flatnonzero(inverse == g)
        labels.append(str(zones[members[np.argmax(pop[members])]]))
    return inverse.astype(np.int64), labels


def _prune_routes(demand: dict[str, Demand], max_pairs: int) -> int:
    """Keep each group's K nearest feasible sites when the route pairs exceed ``max_pairs``.

    K is the largest value (at least 3, so resilience keeps a choice) with
    sum_g min(K, feasible_g) <= max_pairs. Returns K, or 0 when nothing was pruned.
    """
    counts = np.concatenate([d.ds.route.values.sum(axis=1) for d in demand.values()]) if demand else np.zeros(0)
    if counts.sum() <= max_pairs:
        return 0
    k = 3
    while k < counts.max() and np.minimum(counts, k + 1).sum() <= max_pairs:
        k += 1
    for d in demand.values():
        route = d.ds.route.values
        ranked = np.argsort(np.where(route, d.ds.rtt_ms.values, np.inf), axis=1)
        keep = np.zeros_like(route)
        np.put_along_axis(keep, ranked[:, :k], True, axis=1)
        d.ds["route"] = (("group", "site"), route & keep)
    return k


def plan_inputs(world: World, time_slices: int | None = None) -> PlanInputs:
    """Reduce ``world`` to planner arrays (see module docstring)."""
    sc = world.scenario
    ds = world.ds
    T = time_slices or sc.planning.time_slices
    L = 24.0 / T
    periods = list(sc.horizon.periods)
    demand = _demand(world, T, periods)
    pruned_to = _prune_routes(demand, sc.planning.max_route_pairs)
    coords = {
        "bought": periods, "site": ds.site.values, "chip": ds.chip.values, "model": ds.model.values,
        "workload": ds.workload.values, "period": periods, "slice": np.arange(T),
    }
    out = xr.Dataset(
        {**_capacity_arrays(world), **_chip_arrays(world, periods), **_site_arrays(world, periods),
         **_period_arrays(world, periods),
         "peak": (("site", "model", "workload", "period", "slice"), _site_peak(world, demand, periods, T))},
        coords=coords,
        attrs={"budget_total": ds.attrs["budget_total_usd"] / 1e6, "slice_hours": L,
               "routes_pruned_to": pruned_to},
    )
    return PlanInputs(world=world, ds=out, demand=demand, slice_hours=L)


def _demand(world: World, T: int, periods: list[int]) -> dict[str, Demand]:
    """Each workload's demand in ``T`` slices, zones merged into demand groups (see module docstring)."""
    sc, ds = world.scenario, world.ds
    L = 24.0 / T
    # latency feasibility [zone, site, workload]: RTT within the workload's budget (batch: none)
    budget = ds.workload_rtt_budget_ms.fillna(np.inf)
    latency_ok = (ds.rtt_ms <= budget).transpose("zone", "site", "workload").values
    route_ok = ds.residency.values[:, :, None] & latency_ok  # [z, s, w]
    hourly = ds.demand_tokens_per_h.values / 1e6  # [z, m, w, p, h] Mtok/h
    by_slice = hourly.reshape(*hourly.shape[:4], T, int(L)).mean(axis=-1)  # [z, m, w, p, t]
    offsets = np.round(ds.zone_utc_offset_h.values * 4).astype(np.int64)  # quarter hours
    zones, pop = ds.zone.values, ds.zone_population.values
    rtt = ds.rtt_ms.values
    demand: dict[str, Demand] = {}
    for wi, w in enumerate(sc.workloads):
        d_w = by_slice[:, :, wi]  # [z, m, p, t]
        models = np.flatnonzero(d_w.sum(axis=(0, 2, 3)) > 0)
        if not len(models):
            continue
        key = route_ok[:, :, wi].astype(np.uint8)
        if w.kind != "batch":  # batch is balanced per day, so its hour profile does not matter
            key = np.concatenate([key, offsets[:, None].astype(np.uint8)], axis=1)
        zone_group, labels = _groups(key, zones, pop)
        onehot = np.zeros((len(zones), len(labels)))
        onehot[np.arange(len(zones)), zone_group] = 1.0
        first = np.array([int(np.flatnonzero(zone_group == g)[0]) for g in range(len(labels))])
        weight = onehot * np.maximum(pop, 1.0)[:, None]
        group_rtt = (weight.T @ rtt) / weight.sum(axis=0)[:, None]  # population-weighted RTT [g, s]
        demand[w.id] = Demand(
            workload=w.id, kind=w.kind, zone_group=zone_group,
            ds=xr.Dataset(
                {"demand": (("group", "model", "period", "slice"), np.einsum("zg,zmpt->gmpt", onehot, d_w[:, models])),
                 "peak": (("group", "model", "period", "slice"), _slice_peak(
                     np.einsum("zg,zmph->gmph", onehot, hourly[:, models, wi]), T) if w.kind != "batch"
                     else np.ones((len(labels), len(models), len(periods), T))),
                 "route": (("group", "site"), route_ok[first, :, wi]),
                 "rtt_ms": (("group", "site"), group_rtt)},
                coords={"group": labels, "model": ds.model.values[models], "site": ds.site.values,
                        "period": periods, "slice": np.arange(T)},
            ),
        )
    return demand


def _slice_peak(hourly: NDArray[np.float64], T: int) -> NDArray[np.float64]:
    """Busiest hour over mean hour of each of ``T`` slices ([..., 24] -> [..., T]; 1 where the slice is empty)."""
    h = hourly.reshape(*hourly.shape[:-1], T, 24 // T)
    mean = h.mean(axis=-1)
    out: NDArray[np.float64] = np.divide(h.max(axis=-1), mean, out=np.ones_like(mean), where=mean > 0)
    return out


def _site_peak(world: World, demand: dict[str, Demand], periods: list[int], T: int) -> NDArray[np.float64]:
    """``peak[site, model, workload, period, slice]``: the demand-weighted peak of the groups expected at each site."""
    ds = world.ds
    out = np.ones((len(ds.site), len(ds.model), len(ds.workload), len(periods), T))
    m_index = {str(m): i for i, m in enumerate(ds.model.values)}
    for wi, w in enumerate(ds.workload.values):
        dem = demand.get(str(w))
        if dem is None or dem.kind == "batch":
            continue
        g = dem.ds
        route = g.route.values  # [g, s]
        # where each group's demand is expected: spread over its PEAK_SITES nearest feasible sites
        rank = np.argsort(np.argsort(np.where(route, g.rtt_ms.values, np.inf), axis=1), axis=1)
        near = route & (rank < PEAK_SITES)
        share = near / np.maximum(near.sum(axis=1, keepdims=True), 1)  # [g, s]
        d, pk = g.demand.values, g.peak.values  # [g, m', p, t]
        top = np.einsum("gs,gmpt->smpt", share, d * pk)
        bottom = np.einsum("gs,gmpt->smpt", share, d)
        mi = [m_index[str(m)] for m in g.model.values]
        out[:, mi, wi] = np.divide(top, bottom, out=np.ones_like(top), where=bottom > 0)
    return out


def _capacity_arrays(world: World) -> dict[str, tuple[object, ...]]:
    """Capacity per chip [model, chip, workload] in Mtok/h at each engine's operating point, and its inverse.

    The tensor-parallel degree of (m, c) is the one with the best goodput per chip at m's typical shape
    under its strictest targets; the engine at that degree is :func:`sovcloud.world.serving.deployment_service`.
    """
    sc = world.scenario
    services = model_services(world)
    models, chips, wls = sc.models, sc.accelerators, [w.id for w in sc.workloads]
    # per model its operating case, and the same shape without targets (an engine that meets no target
    # still serves batch work at its memory limit)
    cases = [PerfCase(m + suffix, max(1, round(v.input_tokens)), max(1, round(v.output_tokens)), *slo)
             for m, v in services.items() for suffix, slo in (("", (v.ttft_s, v.tpot_s)), ("~free", (None, None)))]
    gp = goodput_table(models, chips, cases=cases) if cases else None
    shape = (len(models), len(chips), len(wls))
    cap, tp = np.zeros(shape), np.zeros(shape, dtype=np.int64)
    precision = np.full(shape, "", dtype=object)
    wl = {w.id: w for w in sc.workloads}
    for mi, m in enumerate(models):
        svc = services.get(m.id)
        if svc is None or gp is None:
            continue
        for ci, c in enumerate(chips):
            best = int(gp.tp.sel(model=m.id, chip=c.id, case=m.id)) \
                or int(gp.tp.sel(model=m.id, chip=c.id, case=m.id + "~free"))
            dep = deployment_service(world, svc, m, c, best) if best > 0 else None
            if dep is None:
                continue
            for w_id in svc.workloads:
                wi = wls.index(w_id)
                w = wl[w_id]
                if w.kind != "batch" and not dep.point.meets_slo:
                    continue
                rate = dep.point.tokens_per_s_per_chip(w.input_tokens, w.output_tokens)
                cap[mi, ci, wi] = rate * 3600.0 / 1e6 * dep.utilization[w_id]
                tp[mi, ci, wi], precision[mi, ci, wi] = best, dep.point.precision
    cap = np.where(cap > 1e-9, cap, 0.0)
    dims = ("model", "chip", "workload")
    return {
        "cap": (dims, cap),
        "tp": (dims, tp),
        "precision": (dims, precision),
        "inv_cap": (dims, np.divide(1.0, cap, out=np.zeros_like(cap), where=cap > 0)),
    }


def _chip_arrays(world: World, periods: list[int]) -> dict[str, tuple[object, ...]]:
    """Per chip (and chip x site): power, servers, lifetimes, prices incl. export fees, supply, fleets."""
    sc, ds = world.scenario, world.ds
    chips = sc.accelerators
    # per-chip power (MW) idle and full, incl. server and network overhead
    args = dict(
        tdp_w=np.array([c.tdp_w for c in chips]), idle_fraction=np.array([c.idle_power_fraction for c in chips]),
        server_chips=np.array([float(c.server_chips) for c in chips]),
        server_overhead_w=np.array([c.server_overhead_w for c in chips]),
    )
    full_mw = np.asarray(it_power_mw(1.0, 1.0, **args))
    idle_mw = np.asarray(it_power_mw(1.0, 0.0, **args))
    chip_crf = np.array([crf(sc.horizon.discount_rate, c.lifetime_years) for c in chips])
    server_cost = np.array([(c.server_chips * c.unit_price_usd + c.server_price_usd) / 1e6 for c in chips])
    chip_cost = np.array([c.server_chips * c.unit_price_usd / 1e6 for c in chips])
    fee = ds.export_fee_share.values  # [c, s, p]
    capex_server = server_cost[:, None, None] + chip_cost[:, None, None] * fee  # [c, s, p] US$M per server
    return {
        "chip_full_mw": ("chip", full_mw), "chip_idle_mw": ("chip", idle_mw),
        "server_chips": ("chip", np.array([c.server_chips for c in chips])),
        "capex_server": (("chip", "site", "period"), capex_server),
        "chip_crf": ("chip", chip_crf),
        # a server bought in b serves in p while b <= p < b + lifetime
        "alive": (("chip", "bought", "period"), np.array(
            [[[b <= p < b + c.lifetime_years for p in periods] for b in periods] for c in chips])),
        "installed_servers": (("site", "chip"), np.array(
            [[np.ceil(site.installed_chips.get(c.id, 0) / c.server_chips) for c in chips] for site in sc.sites])),
        "hostable": (("site", "chip"), np.array(
            [[site.allowed_chips is None or c.id in site.allowed_chips for c in chips] for site in sc.sites])),
        "supply_servers": (("chip", "period"), ds.chip_supply_cap.values
                           / np.array([c.server_chips for c in chips])[:, None]),
        "export_allowed": (("chip", "site", "period"), ds.export_allowed.values),
        "rack_servers": ("chip", np.array([float(c.rack_servers) for c in chips])),
    }


def _site_arrays(world: World, periods: list[int]) -> dict[str, tuple[object, ...]]:
    """Per site (and site x period): availability, installed power, aggregated options, PUE/WUE, prices."""
    ds = world.ds
    return {
        "site_available": (("site", "period"), ds.site_available.values),
        "installed_mw": (("site", "period"), ds.installed_power_mw.values * ds.site_available.values),
        **_site_options(world, periods),
        "candidate": ("site", ds.site_kind.values == "candidate"),
        "pue": ("site", ds.site_pue.values),
        "wue": ("site", ds.site_wue_l_per_kwh.values),
        "energy_price": ("site", ds.site_electricity_usd_per_kwh.values * 1000 / 1e6),  # US$M per MWh
        "renewable_max": ("site", ds.site_renewable_max_share.values),
        "renewable_price": ("site", ds.site_renewable_usd_per_mwh.values / 1e6),
    }


def _site_options(world: World, periods: list[int]) -> dict[str, tuple[object, ...]]:
    """Site options aggregated per site: cumulative MW cap, cost per MW, fixed cost, annuity, space and water.

    An option adds its MW from the first period whose policy date is on or after the decision date (January 1
    of the first period) plus its lead time in calendar months; the costs
    per MW are the options' means weighted by their largest MW cap.
    """
    sc, ds = world.scenario, world.ds
    rate = sc.horizon.discount_rate
    dates = policy_dates(sc)
    start = decision_date(sc)
    S = len(sc.sites)
    opt_cap = np.zeros((S, len(periods)))
    capex_mw = np.zeros(S)
    fixed = np.zeros(S)
    annual_mw = np.zeros(S)  # opex + lease per MW-year, US$M
    opt_crf = np.zeros(S)
    space_cap = np.full(S, np.inf)  # racks; inf where no option states a cap
    water_cap = np.full(S, np.inf)  # m3 per year
    for i, site in enumerate(sc.sites):
        racks = [o.space_cap_racks for o in site.options if o.space_cap_racks is not None]
        water = [o.water_cap_m3_per_year for o in site.options if o.water_cap_m3_per_year is not None]
        if racks:
            space_cap[i] = float(sum(racks))
        if water:
            water_cap[i] = float(sum(water))
        for o in site.options:
            ready = add_months(start, o.lead_time_months)  # calendar months from the decision date
            for j, (p, d) in enumerate(zip(periods, dates, strict=True)):
                if d >= ready:
                    opt_cap[i, j] += o.power_cap_mw.get(p, 0.0)
        if site.options:
            total = sum(max(o.power_cap_mw.values(), default=0.0) for o in site.options) or 1.0
            weights = [max(o.power_cap_mw.values(), default=0.0) / total for o in site.options]
            capex_mw[i] = sum(w * o.capex_usd_per_mw for w, o in zip(weights, site.options, strict=True)) / 1e6
            annual_mw[i] = sum(w * (o.opex_usd_per_mw_year + o.lease_usd_per_kw_month * 12_000)
                               for w, o in zip(weights, site.options, strict=True)) / 1e6
            fixed[i] = sum(o.fixed_capex_usd for o in site.options) / 1e6
            opt_crf[i] = crf(rate, min(o.lifetime_years for o in site.options))
    # no new capacity before a site first serves; after an outage what was built stays (never shrinks)
    opt_cap *= np.maximum.accumulate(ds.site_available.values, axis=1)
    return {
        "option_cap_mw": (("site", "period"), opt_cap),
        "capex_per_mw": ("site", capex_mw), "fixed_capex": ("site", fixed),
        "annual_per_mw": ("site", annual_mw), "option_crf": ("site", opt_crf),
        "space_cap_racks": ("site", space_cap), "water_cap_m3": ("site", water_cap),
    }


def _period_arrays(world: World, periods: list[int]) -> dict[str, tuple[object, ...]]:
    """Per period: discount factors (this year, and summed over the years left), budgets, renewable targets."""
    ds = world.ds
    rate = world.scenario.horizon.discount_rate
    df = np.array([1.0 / (1.0 + rate) ** (p - periods[0]) for p in periods])
    remaining_df = np.array([df[i:].sum() for i in range(len(periods))])  # years p..end, discounted
    return {
        "df": ("period", df), "remaining_df": ("period", remaining_df),
        "budget": ("period", ds.budget_per_period_usd.values / 1e6),
        "renewable_target": ("period", ds.renewable_target.values),
    }
