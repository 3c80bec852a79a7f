"""The greedy baseline: its decisions respect every hard limit, and its loads go to the nearest feasible site.

The decisions are fixed in the planning model and costed by its LP (``solve_greedy``), so a decision
that breaks a limit of the model (power, budget, monotone builds) makes the baseline fail to cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings

from sovcloud.errors import SolveError
from sovcloud.plan.greedy import _site_loads, greedy_decisions, solve_greedy
from sovcloud.plan.inputs import PlanInputs, plan_inputs
from sovcloud.plan.make import PlanOptions, make_plan
from sovcloud.plan.model import build_model
from sovcloud.plan.solver import solve
from sovcloud.scenario.loader import load_scenario
from sovcloud.scenario.model import Scenario
from sovcloud.scenario.shocks import parse_shock
from sovcloud.world.compiled import compile as compile_world
from sovcloud.world.shocks import apply_shocks

# the random tiny instances of the planner tests (tests/ is on sys.path under pytest's default import mode)
from tests.plan.test_make import NO_SHRINK, TINY_PARAMS, tiny_scenario

DATA = Path(__file__).parents[1] / "data"
TOL = 1e-9


def inputs(source: Path | Scenario) -> PlanInputs:
    return plan_inputs(compile_world(load_scenario(source) if isinstance(source, Path) else source))


def fleet_servers(pi: PlanInputs, servers: xr.DataArray) -> xr.DataArray:
    """Servers alive [site, chip, period]: purchases within their lifetime plus installed chips."""
    sc = pi.world.scenario
    d = pi.ds
    periods = xr.DataArray(pi.periods, dims="period", coords={"period": pi.periods})
    bought = xr.DataArray(pi.periods, dims="bought", coords={"bought": pi.periods})
    life = xr.DataArray([sc.chip(str(c)).lifetime_years for c in d.chip.values], coords={"chip": d.chip.values})
    alive = (bought <= periods) & (periods < bought + life)
    installed = xr.DataArray(
        [[np.ceil(sc.site(str(s)).installed_chips.get(str(c), 0) / sc.chip(str(c)).server_chips)
          for c in d.chip.values] for s in d.site.values], coords={"site": d.site.values, "chip": d.chip.values})
    return (servers * alive).sum("bought") + installed


def greedy_capex(pi: PlanInputs, dec: dict[str, xr.DataArray]) -> xr.DataArray:
    """Capital spend per period (US$M) as the planning model counts it, opening costs included."""
    d = pi.ds
    servers, built, opened = dec["servers"], dec["built"], dec["opened"]
    candidate = d.candidate & (d.option_cap_mw.max("period") > 0)  # the model's 'opened' sites
    return ((servers * d.capex_server.rename(period="bought")).sum(["site", "chip"]).rename(bought="period")
            + ((built - built.shift(period=1, fill_value=0)) * d.capex_per_mw).sum("site")
            + ((opened - opened.shift(period=1, fill_value=0)) * d.fixed_capex).where(candidate, 0).sum("site"))


def check_masks_power_supply(pi: PlanInputs, dec: dict[str, xr.DataArray]) -> None:
    d = pi.ds
    servers, built, opened = dec["servers"], dec["built"], dec["opened"]
    assert bool((servers >= 0).all()) and bool((servers == np.round(servers)).all())
    allowed = (d.export_allowed & d.site_available).rename(period="bought").transpose(*servers.dims)
    assert not bool(((servers > 0) & ~allowed).any()), "servers bought where export control or availability forbids"
    # built MW within the options, never shrinking; openings never reverted
    assert bool((built >= -TOL).all()) and bool((built <= d.option_cap_mw + TOL).all())
    assert bool((built.diff("period") >= -TOL).all()), "built MW shrinks (the model's built_monotone)"
    assert bool((opened.diff("period") >= 0).all())
    # supply per chip and period
    supply = d.supply_servers.rename(period="bought")
    assert bool((servers.sum("site") <= supply + TOL).all()), "supply cap exceeded"
    # power: the fleet alive in each period the site is available fits installed + built MW
    power = (fleet_servers(pi, servers) * d.server_chips * d.chip_full_mw).sum("chip")
    over = (power > d.installed_mw + built + 1e-9) & d.site_available
    assert not bool(over.any()), f"fleet power above installed + built at {over.where(over, drop=True).coords}"


def check_budget(pi: PlanInputs, dec: dict[str, xr.DataArray]) -> None:
    d = pi.ds
    capex = greedy_capex(pi, dec)
    assert bool((capex <= d.budget + 1e-9).all()), f"period budget exceeded: {capex.values} > {d.budget.values}"
    assert float(capex.sum()) <= d.attrs["budget_total"] + 1e-9, \
        f"total budget exceeded: {float(capex.sum())} > {d.attrs['budget_total']}"


# ----------------------------------------------------------------------------- hard limits


@pytest.mark.parametrize("name", ["tiny_a.yaml", "tiny_b.yaml", "tiny_c.yaml"])
def test_greedy_decisions_respect_masks_power_and_supply(name: str) -> None:
    pi = inputs(DATA / name)
    check_masks_power_supply(pi, greedy_decisions(pi))


@pytest.mark.slow
@settings(max_examples=50, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow], phases=NO_SHRINK)
@given(params=TINY_PARAMS)
def test_random_greedy_decisions_respect_every_limit(params: dict[str, Any]) -> None:
    pi = inputs(tiny_scenario(params))
    dec = greedy_decisions(pi)
    check_masks_power_supply(pi, dec)
    check_budget(pi, dec)


@pytest.mark.slow
@settings(max_examples=5, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow], phases=NO_SHRINK)
@given(params=TINY_PARAMS)
def test_random_greedy_plans_are_costed_and_no_better_than_the_bound(params: dict[str, Any]) -> None:
    bm = build_model(inputs(tiny_scenario(params)))
    try:
        greedy = solve_greedy(bm)
    except SolveError as exc:
        pytest.fail(f"the greedy decisions break a limit of the planning model: {exc}")
    assert greedy.objective >= solve(bm.model, time_limit_s=10).bound - 1e-9


def test_greedy_budget_includes_the_opening_cost() -> None:
    """tiny_b: Paris costs US$0.3M to open; servers, MW and openings together must stay within US$1.2M."""
    pi = inputs(DATA / "tiny_b.yaml")
    assert float(pi.ds.fixed_capex.sel(site="fr-par")) == pytest.approx(0.3)
    check_budget(pi, greedy_decisions(pi))


def test_greedy_plan_of_a_budget_bound_scenario_can_be_costed() -> None:
    sc = load_scenario(DATA / "tiny_b.yaml")
    try:
        plan = make_plan(sc, PlanOptions(solver="greedy"))
    except SolveError as exc:
        pytest.fail(f"greedy plan infeasible in the planning model (budget incl. opening cost): {exc}")
    assert plan.result.source == "greedy"


def test_greedy_fleet_fits_a_later_power_cut() -> None:
    """tiny_c: Frankfurt's power halves from 2026; servers bought in 2025 still live then."""
    sc = load_scenario(DATA / "tiny_c.yaml")
    pi = inputs(apply_shocks(sc, [parse_shock("power-cut:de-fra:0.5@2026")]))
    check_masks_power_supply(pi, greedy_decisions(pi))


def test_greedy_handles_a_single_site(write: Any) -> None:
    path = write(f"extends: {DATA / 'tiny_c.yaml'}\nsites:\n  - {{id: us-ash, remove: true}}\n")
    pi = inputs(path)
    assert len(pi.ds.site) == 1
    dec = greedy_decisions(pi)
    assert float(dec["servers"].sum()) > 0
    check_masks_power_supply(pi, dec)


def test_greedy_on_tiny_a_is_costed_and_not_better_than_the_milp() -> None:
    bm = build_model(inputs(DATA / "tiny_a.yaml"))
    greedy = solve_greedy(bm)
    assert greedy.source == "greedy"
    milp = solve(bm.model, mip_gap=1e-9, time_limit_s=20)
    assert greedy.objective >= milp.objective - 1e-9


# ----------------------------------------------------------------------------- nearest site


def expected_loads(pi: PlanInputs, rho: float) -> np.ndarray:
    """Peak load per [site, model, workload, period] of each demand group at its nearest feasible site
    (population-weighted RTT), ``min(rho, 0.5)`` of it at the second nearest, computed from the world."""
    d, ds = pi.ds, pi.world.ds
    out = np.zeros((len(d.site), len(d.model), len(d.workload), len(d.period)))
    rtt = ds.rtt_ms.values
    pop = np.maximum(ds.zone_population.values, 1.0)
    models = [str(m) for m in d.model.values]
    for wi, w in enumerate(d.workload.values):
        dem = pi.demand.get(str(w))
        if dem is None:
            continue
        budget = float(ds.workload_rtt_budget_ms.sel(workload=w))
        budget = budget if np.isfinite(budget) else np.inf
        for g in range(len(dem.ds.group)):
            zones = np.flatnonzero(dem.zone_group == g)
            ok_zone = ds.residency.values[zones] & (rtt[zones] <= budget)  # [zones, site]
            assert (ok_zone == ok_zone[0]).all(), "a demand group mixes zones with different feasible sites"
            mean_rtt = (pop[zones, None] * rtt[zones]).sum(0) / pop[zones].sum()
            for pi_, _p in enumerate(d.period.values):
                ok = ok_zone[0] & d.site_available.values[:, pi_]
                order = [s for s in np.argsort(np.where(ok, mean_rtt, np.inf), kind="stable") if ok[s]]
                if not order:
                    continue
                share = min(rho, 0.5) if len(order) >= 2 else 0.0
                for k, m in enumerate(dem.ds.model.values):
                    series = dem.ds.demand.values[g, k, pi_]
                    peak = series.mean() if dem.kind == "batch" else series.max()
                    mi = models.index(str(m))
                    out[order[0], mi, wi, pi_] += peak * (1 - share)
                    if share:
                        out[order[1], mi, wi, pi_] += peak * share
    return out


def test_greedy_loads_go_to_the_nearest_feasible_site() -> None:
    pi = inputs(DATA / "tiny_a.yaml")  # resilience_share 0: all of a group's load at its nearest site
    load = _site_loads(pi)
    np.testing.assert_allclose(load, expected_loads(pi, 0.0), rtol=1e-9, atol=1e-12)
    by_site = dict(zip(pi.ds.site.values, load.sum(axis=(1, 2, 3)), strict=True))
    # Berlin and Paris (equal populations, one demand group) are nearer Paris on average; New York to Ashburn
    assert by_site["de-fra"] == 0.0
    assert by_site["fr-par"] > 0 and by_site["us-ash"] > 0
    dec = greedy_decisions(pi)
    assert float(dec["servers"].sel(site="de-fra").sum()) == 0
    assert float(dec["servers"].sel(site="fr-par").sum()) > 0 and float(dec["servers"].sel(site="us-ash").sum()) > 0


def test_greedy_resilience_share_goes_to_the_second_nearest_site() -> None:
    pi = inputs(DATA / "tiny_b.yaml")  # resilience_share 0.5: the EU group splits between Paris and Frankfurt
    load = _site_loads(pi)
    np.testing.assert_allclose(load, expected_loads(pi, 0.5), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(load[0], load[1], rtol=1e-9)
