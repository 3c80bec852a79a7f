"""The default scenario's model under plain HiGHS settings, to compare with the planner's solve.

    python benchmarks/plan_solver_options.py [--time-limit 60]

Prints the LP relaxation time by dual simplex and by interior point (no crossover), and the gap plain
HiGHS branch-and-bound reaches within the time limit with no warm start, next to sovcloud's solve.
"""

from __future__ import annotations

import argparse
import time

import highspy
import numpy as np

from sovcloud.plan.inputs import plan_inputs
from sovcloud.plan.model import build_model, trim_idle_servers
from sovcloud.plan.solver import solve
from sovcloud.scenario.loader import load_scenario
from sovcloud.world.compiled import compile


def _relaxed(model: object, method: str) -> tuple[float, float]:
    h = model.to_highspy()  # type: ignore[attr-defined]
    h.setOptionValue("output_flag", False)
    n = h.getLp().num_col_
    h.changeColsIntegrality(n, np.arange(n), np.array([highspy.HighsVarType.kContinuous] * n))
    h.setOptionValue("solver", method)
    if method == "ipm":
        h.setOptionValue("run_crossover", "off")
    else:
        h.setOptionValue("simplex_strategy", 1)
    t = time.perf_counter()
    h.run()
    return time.perf_counter() - t, float(h.getInfo().objective_function_value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--time-limit", type=float, default=60.0)
    args = parser.parse_args()
    bm = build_model(plan_inputs(compile(load_scenario())))
    m = bm.model
    print(f"model: {m.nvars:,} variables, {m.ncons:,} constraints")
    for method in ("simplex", "ipm"):
        seconds, obj = _relaxed(m, method)
        print(f"LP relaxation by {method:7s}: {seconds:6.1f} s, objective {obj:,.2f}")
    h = m.to_highspy()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", args.time_limit)
    h.setOptionValue("mip_rel_gap", 0.01)
    t = time.perf_counter()
    h.run()
    info = h.getInfo()
    print(f"plain HiGHS MILP: {time.perf_counter() - t:6.1f} s, status '{h.modelStatusToString(h.getModelStatus())}', "
          f"objective {info.objective_function_value:,.2f}, bound {info.mip_dual_bound:,.2f}, gap {info.mip_gap:.2%}, "
          f"nodes {info.mip_node_count}")
    t = time.perf_counter()
    r = solve(m, time_limit_s=args.time_limit, improve=lambda v: trim_idle_servers(bm, v))
    print(f"sovcloud solve:   {time.perf_counter() - t:6.1f} s, status '{r.status}', objective {r.objective:,.2f}, "
          f"bound {r.bound:,.2f}, gap {r.gap:.2%}, plan from {r.source}")


if __name__ == "__main__":
    main()
