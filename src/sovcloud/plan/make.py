"""``sovcloud plan``: the multi-year buildout, from scenario to decisions, costs and footprint.

Flow: scenario -> (shocks) -> compiled world -> planner inputs -> MILP (or the greedy baseline)
-> HiGHS -> :class:`Plan`, whose arrays are over named dimensions: fleet [site, chip, period],
built MW and openings [site, period], served and unserved tokens per zone, energy, water, carbon
and costs per period. Flows are split back from demand groups to zones in proportion to demand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from sovcloud.plan.greedy import greedy_fixed, solve_greedy
from sovcloud.plan.inputs import PlanInputs, plan_inputs
from sovcloud.plan.model import BuiltModel, build_model, trim_idle_servers
from sovcloud.plan.solver import SolveResult, solve
from sovcloud.scenario.model import Scenario
from sovcloud.scenario.shocks import Shock
from sovcloud.world.compiled import World
from sovcloud.world.compiled import compile as compile_world
from sovcloud.world.shocks import apply_shocks

__all__ = ["Plan", "PlanOptions", "make_plan", "plan_from_solution"]


@dataclass(frozen=True)
class PlanOptions:
    solver: Literal["milp", "greedy"] = "milp"
    objective: Literal["cost", "served"] | None = None
    time_limit_s: float | None = None
    mip_gap: float | None = None
    shocks: list[Shock] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """A solved buildout plan and everything derived from it."""

    world: World
    inputs: PlanInputs
    built_model: BuiltModel
    result: SolveResult
    options: PlanOptions
    arrays: xr.Dataset
    timings: dict[str, float]

    @property
    def scenario(self) -> Scenario:
        return self.world.scenario


def make_plan(scenario: Scenario, options: PlanOptions | None = None) -> Plan:
    """Compile, build, solve (MILP with warm start, or the greedy baseline) and extract a plan."""
    opts = options or PlanOptions()
    t0 = time.perf_counter()
    sc = apply_shocks(scenario, [*scenario.shocks, *opts.shocks]) if (opts.shocks or scenario.shocks) else scenario
    world = compile_world(sc)
    pi = plan_inputs(world)
    t1 = time.perf_counter()
    objective = opts.objective or sc.planning.objective
    bm = build_model(pi, objective=objective)
    t2 = time.perf_counter()
    if opts.solver == "greedy":
        result = solve_greedy(bm)
    else:
        result = solve(bm.model,
                       time_limit_s=sc.planning.time_limit_s if opts.time_limit_s is None else opts.time_limit_s,
                       mip_gap=sc.planning.mip_gap if opts.mip_gap is None else opts.mip_gap,
                       improve=lambda v: trim_idle_servers(bm, v), fallback=lambda: greedy_fixed(bm))
    t3 = time.perf_counter()
    arrays = plan_from_solution(pi, result)
    timings = {"compile_s": t1 - t0, "build_s": t2 - t1, "solve_s": t3 - t2, "extract_s": time.perf_counter() - t3}
    return Plan(world=world, inputs=pi, built_model=bm, result=result, options=opts, arrays=arrays, timings=timings)


def plan_from_solution(pi: PlanInputs, r: SolveResult) -> xr.Dataset:
    """Decisions, flows per zone, footprint and costs from a solved model (see module docstring)."""
    d = pi.ds
    servers = r["servers"].fillna(0).round().reindex(site=d.site, chip=d.chip, fill_value=0)
    fleet_servers = (servers * d.alive).sum("bought") + d.installed_servers
    fleet_chips = fleet_servers * d.server_chips
    built = r["built"].fillna(0).reindex(site=d.site, fill_value=0)
    opened = r["opened"].fillna(0).round().reindex(site=d.site, fill_value=0) if "opened" in r.values \
        else xr.zeros_like(built)
    served, unserved = _zone_tokens(pi, r)
    busy, foot = _footprint(pi, r, fleet_servers)
    util = (busy / (fleet_chips * 8760.0).where(fleet_chips > 0)).fillna(0.0)
    power_mw = (fleet_servers * d.server_chips * d.chip_full_mw).sum("chip")
    coords = {"zone": pi.world.ds.zone.values, "site": d.site.values, "model": d.model.values,
              "workload": d.workload.values, "period": pi.periods}
    return xr.Dataset(
        {
            "servers_bought": servers.rename(bought="period"),
            "fleet_chips": fleet_chips,
            "built_mw": built,
            "opened": opened,
            "power_used_mw": power_mw,
            "power_cap_mw": d.installed_mw + d.option_cap_mw,
            "utilization": util,
            "deployed_chips": _deployed_chips(r, d, fleet_chips),
            "served_mtok_day": (("zone", "site", "model", "workload", "period"), served),
            "unserved_mtok_day": (("zone", "model", "workload", "period"), unserved),
            **foot,
            **_spend(d, servers, built, opened, foot["energy_mwh"], foot["renewable_mwh"]),
        },
        coords=coords,
    )


def _zone_tokens(pi: PlanInputs, r: SolveResult) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Served [zone, site, model, workload, period] and unserved [zone, model, workload, period] Mtok/day.

    Each group's flows and shortfall are split back to its zones in proportion to their demand
    (per slice; batch per day, as its flows are daily).
    """
    ds, d = pi.world.ds, pi.ds
    L = pi.slice_hours
    Z, S, P = len(ds.zone), len(d.site), len(pi.periods)
    served = np.zeros((Z, S, len(d.model), len(d.workload), P))
    unserved = np.zeros((Z, len(d.model), len(d.workload), P))
    m_index = {str(m): i for i, m in enumerate(d.model.values)}
    hourly = ds.demand_tokens_per_h.values / 1e6
    by_slice = hourly.reshape(*hourly.shape[:4], len(d.slice), int(L)).mean(axis=-1)  # [z, m, w, p, t]
    for wi, w in enumerate(d.workload.values):
        dem = pi.demand.get(str(w))
        if dem is None:
            continue
        g = dem.ds
        flow = r[f"flow_{w}"].fillna(0).reindex(site=d.site, fill_value=0)
        short = r[f"short_{w}"].fillna(0)
        mi = [m_index[str(m)] for m in g.model.values]
        z_dem = by_slice[:, mi, wi]  # [z, m', p, t]
        g_dem = g.demand.values  # [g, m', p, t]
        share = np.divide(z_dem, g_dem[dem.zone_group], out=np.zeros_like(z_dem), where=g_dem[dem.zone_group] > 0)
        if dem.kind == "batch":
            day_share = np.divide(z_dem.sum(-1), g_dem.sum(-1)[dem.zone_group],
                                  out=np.zeros(z_dem.shape[:-1]), where=g_dem.sum(-1)[dem.zone_group] > 0)
            f = flow.transpose("group", "site", "model", "period").values  # Mtok/day
            served[:, :, mi, wi] = f[dem.zone_group] * day_share[:, None]
            unserved[:, mi, wi] = short.transpose("group", "model", "period").values[dem.zone_group] * day_share
        else:
            f = flow.transpose("group", "site", "model", "period", "slice").values  # Mtok/h
            served[:, :, mi, wi] = (f[dem.zone_group] * share[:, None]).sum(-1) * L
            sh = short.transpose("group", "model", "period", "slice").values
            unserved[:, mi, wi] = (sh[dem.zone_group] * share).sum(-1) * L
    return served, unserved


def _footprint(pi: PlanInputs, r: SolveResult, fleet_servers: xr.DataArray) -> tuple[xr.DataArray,
                                                                                      dict[str, xr.DataArray]]:
    """Busy chip-hours per year [site, chip, period] and energy, renewables, water and carbon [site, period].

    Busy chip-hours come from the use variables, idle power from the fleet.
    """
    ds, d = pi.world.ds, pi.ds
    use = r["use"].fillna(0)
    busy = (use * d.inv_cap).sum(["model", "workload", "slice"]).reindex(site=d.site, chip=d.chip, fill_value=0) \
        * (365.0 * pi.slice_hours)
    it_mwh = (fleet_servers * d.server_chips * d.chip_idle_mw * 8760.0).sum("chip") \
        + (busy * (d.chip_full_mw - d.chip_idle_mw)).sum("chip")
    energy = it_mwh * d.pue
    renew = r["renew"].fillna(0)
    water_m3 = it_mwh * ds.site_wue_l_per_kwh  # L/kWh x MWh = m3
    carbon_t = (energy - renew).clip(min=0) * ds.site_carbon_g_per_kwh / 1000.0
    return busy, {"energy_mwh": energy, "it_energy_mwh": it_mwh, "renewable_mwh": renew,
                  "water_m3": water_m3, "carbon_t": carbon_t}


def _spend(d: xr.Dataset, servers: xr.DataArray, built: xr.DataArray, opened: xr.DataArray,
           energy: xr.DataArray, renew: xr.DataArray) -> dict[str, xr.DataArray]:
    """Spend per period in undiscounted US$M: capex of servers and sites, opex and lease, energy, renewables."""
    capex_servers = (servers * d.capex_server.rename(period="bought")).sum(["site", "chip"]).rename(bought="period")
    inc = built - built.shift(period=1, fill_value=0)
    capex_sites = (inc * d.capex_per_mw).sum("site") + ((opened - opened.shift(period=1, fill_value=0))
                                                         * d.fixed_capex).sum("site")
    return {
        "capex_servers_musd": capex_servers, "capex_sites_musd": capex_sites,
        "opex_lease_musd": (built * d.annual_per_mw).sum("site"),
        "energy_musd": (energy * d.energy_price).sum("site"),
        "renewables_musd": (renew * d.renewable_price).sum("site"),
    }


def _deployed_chips(r: SolveResult, d: xr.Dataset, fleet_chips: xr.DataArray) -> xr.DataArray:
    """Chips of each fleet running each model [site, chip, model, period].

    The model's ``alloc`` says how many chips of a fleet a model needs; chips the solution leaves
    unallocated (idle headroom) are spread over the fleet's models in proportion to ``alloc``, so
    every chip bought serves some model and the sum over models equals the fleet.
    """
    alloc = r["alloc"].fillna(0).clip(min=0).reindex(site=d.site, chip=d.chip, model=d.model, fill_value=0)
    total = alloc.sum("model")
    scale = (fleet_chips / total.where(total > 0)).fillna(0.0)
    return (alloc * scale).transpose("site", "chip", "model", "period")
