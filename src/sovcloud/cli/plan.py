"""``sovcloud plan``: the multi-year buildout optimizer, its summary, plan.json, Parquet and the report."""

from __future__ import annotations

from pathlib import Path

import typer

from sovcloud.errors import UsageError
from sovcloud.vocab import DEFAULT_SCENARIO

from .common import cli_errors, out_console
from .simulate import check_plan

__all__ = ["register"]


def plan(
    path: str = typer.Argument(None, help=f"scenario YAML or bundled name (default {DEFAULT_SCENARIO})"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="folder for plan.json and the Parquet tables"),
    time_limit: float = typer.Option(None, "--time-limit", help="solver time limit in seconds (default 60)"),
    gap: float = typer.Option(None, "--gap", help="relative MIP gap to stop at (default 0.01)"),
    objective: str = typer.Option(None, "--objective", help="cost (default) or served"),
    solver: str = typer.Option("milp", "--solver", help="milp (default) or greedy (the baseline)"),
    shock: list[str] = typer.Option(None, "--shock", help="overlay kind:target[:factor][@when], repeatable"),
    compare_greedy: bool = typer.Option(True, "--compare-greedy/--no-compare-greedy",
                                        help="also solve the greedy baseline and report the saving"),
    report: bool = typer.Option(True, "--report/--no-report", help="also write the HTML report (report.html)"),
    check: bool = typer.Option(False, "--check", help="then replay the plan's busiest day through the simulator "
                                                      "and print it beside the plan (exit 1 when it does not hold)"),
    check_sample: float | None = typer.Option(None, "--check-sample", help="fraction of arrivals and slots the "
                                                                           "check replays (default: automatic)"),
) -> None:
    """Plan the multi-year buildout (sites, chips, flows) at the lowest cost, and explain shortfalls."""
    if solver not in ("milp", "greedy"):
        raise UsageError(f"--solver {solver!r} is not known; use milp or greedy")
    if objective not in (None, "cost", "served"):
        raise UsageError(f"--objective {objective!r} is not known; use cost or served")
    if time_limit is not None and time_limit <= 0:
        raise UsageError(f"--time-limit {time_limit} must be positive, e.g. 60")
    if gap is not None and not 0 < gap < 1:
        raise UsageError(f"--gap {gap} must be between 0 and 1, e.g. 0.01")
    from sovcloud.plan.io import write_plan
    from sovcloud.plan.make import PlanOptions, make_plan
    from sovcloud.plan.summary import print_summary
    from sovcloud.report.write import write_report
    from sovcloud.scenario.loader import load_scenario
    from sovcloud.scenario.shocks import parse_shock

    shocks = [parse_shock(s) for s in (shock or [])]
    sc = load_scenario(path or DEFAULT_SCENARIO)
    options = PlanOptions(solver="greedy" if solver == "greedy" else "milp",
                          objective="served" if objective == "served" else ("cost" if objective else None),
                          time_limit_s=time_limit, mip_gap=gap, shocks=shocks)
    with out_console.status("solving the buildout plan ..."):
        result = make_plan(sc, options)
        greedy = make_plan(sc, PlanOptions(solver="greedy", shocks=shocks)) \
            if compare_greedy and solver == "milp" else None
    print_summary(result, out_console, greedy)
    source = str(Path(path).resolve()) if path is not None and Path(path).is_file() else (path or DEFAULT_SCENARIO)
    written = write_plan(result, out, greedy, source)
    held = check_plan(out / "plan.json", out / "check", check_sample) if check else True
    if report:
        written.append(write_report(out / "plan.json", out / "report.html", out / "check" if check else None))
    out_console.print(f"wrote {', '.join(str(p) for p in written)}", markup=False, highlight=False)
    if not held:
        raise typer.Exit(1)


def diff(
    a: Path = typer.Argument(..., help="plan folder (or plan.json) A"),
    b: Path = typer.Argument(..., help="plan folder (or plan.json) B"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the comparison as JSON"),
) -> None:
    """Compare two plans: sites, chips, spend, served share, latency, footprint, and the shortfalls that differ."""
    import json

    from sovcloud.plan.diff import diff_plans, print_diff

    d = diff_plans(a, b)
    print_diff(d, out_console)
    if json_out is not None:
        json_out.write_text(json.dumps(d.to_json(), indent=2, default=float) + "\n", encoding="utf-8")


def register(app: typer.Typer) -> None:
    """Add ``plan`` and ``diff`` to ``app``."""
    app.command("plan")(cli_errors(plan))
    app.command("diff")(cli_errors(diff))
