from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sovcloud.plan.inputs import plan_inputs
from sovcloud.plan.model import build_model, trim_idle_servers
from sovcloud.plan.solver import solve, solve_fixed
from sovcloud.scenario.loader import load_scenario
from sovcloud.world.compiled import compile

TINY = Path(__file__).parents[1] / "data" / "tiny_a.yaml"


def _model():  # type: ignore[no-untyped-def]
    return build_model(plan_inputs(compile(load_scenario(TINY))))


def test_solve_after_another_highs_with_other_threads() -> None:
    """HiGHS keeps a global scheduler: a solve after a 1-thread run must still work."""
    bm = _model()
    other = bm.model.to_highspy()
    other.setOptionValue("output_flag", False)
    other.setOptionValue("threads", 1)
    other.run()
    r = solve(bm.model, time_limit_s=20, threads=2)
    assert r.status in ("Optimal", "Time limit reached")
    assert np.isfinite(r.objective) and r.bound <= r.objective + 1e-9


def test_bound_gap_and_fixed_evaluation_agree() -> None:
    bm = _model()
    r = solve(bm.model, time_limit_s=20, mip_gap=1e-9, improve=lambda v: trim_idle_servers(bm, v))
    assert r.gap <= 1e-6
    fixed = {"servers": r["servers"].fillna(0).round()}
    if "opened" in r.values:
        fixed["opened"] = r["opened"].fillna(0).round()
    again = solve_fixed(bm.model, fixed)
    assert abs(again.objective - r.objective) <= 1e-6 * max(1.0, abs(r.objective))
    assert "power" in again.duals


def test_trimming_never_adds_servers() -> None:
    bm = _model()
    r = solve(bm.model, time_limit_s=20)
    trimmed = trim_idle_servers(bm, r.values)["servers"]
    assert bool((trimmed <= r["servers"].fillna(0).round() + 1e-9).all())
    assert float(trimmed.min()) >= 0


def test_shadow_prices_predict_the_value_of_one_percent_more_power() -> None:
    """The power duals come from the LP with only the site openings fixed: re-solving that LP with 1 % more power
    at a binding site changes the objective by the dual x the extra MW, within 10 %."""
    data = Path(__file__).parents[1] / "data" / "tiny_a.yaml"
    pi = plan_inputs(compile(load_scenario(data)))
    r = solve(build_model(pi).model, mip_gap=1e-9, time_limit_s=20)
    power = r.duals["power"].fillna(0.0)
    site, period = (str(x) for x in power.where(abs(power) == abs(power).max(), drop=True).stack(k=["site", "period"])
                    .k.values[0])
    dual = float(power.sel(site=site, period=int(period)))
    assert abs(dual) > 1e-6, "no power limit binds: the check would be vacuous"
    fixed = {"opened": r["opened"]} if "opened" in r.values else {}
    base = solve_fixed(build_model(pi).model, fixed).objective
    mw = float(pi.ds.installed_mw.sel(site=site, period=int(period)))
    delta = 0.01 * mw
    pi.ds["installed_mw"].loc[{"site": site, "period": int(period)}] = mw + delta
    more = solve_fixed(build_model(pi).model, fixed).objective
    assert more <= base + 1e-12
    assert (base - more) == pytest.approx(abs(dual) * delta, rel=0.10)
