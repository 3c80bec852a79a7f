from __future__ import annotations

from pathlib import Path

import numpy as np

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
