"""Regressions found in review: installed fleets, a site's allowed chips, shocks with unknown targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovcloud.errors import ScenarioError
from sovcloud.plan.make import PlanOptions, make_plan
from sovcloud.scenario.loader import load_scenario
from sovcloud.scenario.shocks import parse_shock
from sovcloud.world.shocks import apply_shocks

TINY = Path(__file__).parents[1] / "data" / "tiny_a.yaml"


def _with_site(site_id: str, **update: object):  # type: ignore[no-untyped-def]
    sc = load_scenario(TINY)
    sites = [s.model_copy(update=update) if s.id == site_id else s for s in sc.sites]
    return sc.model_copy(update={"sites": sites}), site_id


@pytest.mark.slow
def test_installed_chips_plan_with_milp_and_greedy() -> None:
    sc, sid = _with_site("us-ash", installed_chips={"h100-sxm": 8})
    for solver in ("milp", "greedy"):
        plan = make_plan(sc, PlanOptions(solver=solver, time_limit_s=20))
        assert float(plan.arrays.fleet_chips.sel(site=sid, chip="h100-sxm").min()) >= 8


@pytest.mark.slow
def test_allowed_chips_restricts_purchases() -> None:
    free = make_plan(load_scenario(TINY), PlanOptions(time_limit_s=20)).arrays.servers_bought
    assert float(free.sel(site="fr-par", chip="h100-sxm").sum()) > 0  # unrestricted, Paris buys H100s
    sc, sid = _with_site("fr-par", allowed_chips=["ascend-910b"])
    for solver in ("milp", "greedy"):
        bought = make_plan(sc, PlanOptions(solver=solver, time_limit_s=20)).arrays.servers_bought.sel(site=sid)
        assert float(bought.sel(chip="h100-sxm").sum()) == 0


@pytest.mark.parametrize("text", ["surge:XX:3", "embargo:vendor:NVIDA", "embargo:h100-sx"])
def test_shock_with_unknown_target_is_an_error(text: str) -> None:
    with pytest.raises(ScenarioError, match="matches no"):
        apply_shocks(load_scenario(TINY), [parse_shock(text)])
