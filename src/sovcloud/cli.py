"""The ``sovcloud`` command line: a thin layer over the library.

Every :class:`~sovcloud.errors.SovcloudError` becomes a clear message on stderr and its exit code
(2 for bad input), never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .cli_gateway import register as register_gateway
from .cli_latency import latency_command
from .cli_perf import perf_command
from .cli_report import register as register_report
from .cli_sim import register as register_sim
from .cli_tenants import register as register_tenants
from .cliutil import cli_errors, out_console
from .compiled import compile as compile_world
from .display import show_world
from .errors import UsageError
from .plan import PlanOptions, make_plan
from .planio import write_plan
from .planreport import print_summary
from .report import write_report
from .scenario import DEFAULT_SCENARIO, load_scenario
from .shocks import parse_shock
from .world import Scenario

__all__ = ["app", "main"]

app = typer.Typer(
    name="sovcloud",
    help="Plan, simulate and operate a sovereign, geo-distributed AI inference cloud.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
def _scenario(path: str | None) -> Scenario:
    return load_scenario(path if path is not None else DEFAULT_SCENARIO)


@app.command()
@cli_errors
def show(path: str = typer.Argument(None, help="scenario YAML or bundled name (default global-2025)")) -> None:
    """Print the scenario as readable tables: regions, new sites, chips, models, demand, policies."""
    show_world(compile_world(_scenario(path)), out_console)


@app.command()
@cli_errors
def validate(path: str = typer.Argument(..., help="scenario YAML file (or bundled name)")) -> None:
    """Check a scenario and report every problem at once (file:line, field, value, fix); exit 2 if any."""
    sc = _scenario(path)
    world = compile_world(sc)
    out_console.print(
        f"ok: {path}: scenario '{sc.name}', {len(sc.sites)} sites, {len(sc.accelerators)} chips, "
        f"{len(sc.models)} models, {len(sc.demand.zones)} demand zones, periods {sc.horizon.periods}; "
        f"{int(world.ds.residency.sum())} allowed zone-site pairs",
        markup=False, highlight=False,
    )


@app.command()
@cli_errors
def plan(
    path: str = typer.Argument(None, help="scenario YAML or bundled name (default global-2025)"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="folder for plan.json and the Parquet tables"),
    time_limit: float = typer.Option(None, "--time-limit", help="solver time limit in seconds (default 60)"),
    gap: float = typer.Option(None, "--gap", help="relative MIP gap to stop at (default 0.01)"),
    objective: str = typer.Option(None, "--objective", help="cost (default) or served"),
    solver: str = typer.Option("milp", "--solver", help="milp (default) or greedy (the baseline)"),
    shock: list[str] = typer.Option(None, "--shock", help="overlay kind:target[:factor][@when], repeatable"),
    compare_greedy: bool = typer.Option(True, "--compare-greedy/--no-compare-greedy",
                                        help="also solve the greedy baseline and report the saving"),
    report: bool = typer.Option(True, "--report/--no-report", help="also write the HTML report (report.html)"),
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
    shocks = [parse_shock(s) for s in (shock or [])]
    sc = _scenario(path)
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
    if report:
        written.append(write_report(out / "plan.json", out / "report.html"))
    out_console.print(f"wrote {', '.join(str(p) for p in written)}", markup=False, highlight=False)


def _strip_required(node: object) -> None:
    if isinstance(node, dict):
        node.pop("required", None)
        for v in node.values():
            _strip_required(v)
    elif isinstance(node, list):
        for v in node:
            _strip_required(v)


@app.command()
@cli_errors
def schema(
    out: Path = typer.Option(None, "--out", "-o", help="write to this file instead of stdout"),
    overlay: bool = typer.Option(False, "--overlay", help="no required fields (for files that use extends)"),
) -> None:
    """Write the scenario JSON Schema (for editor completion and checks)."""
    doc = Scenario.model_json_schema()
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "sovcloud scenario" + (" overlay" if overlay else "")
    if overlay:
        _strip_required(doc)
    text = json.dumps(doc, indent=2)
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        try:
            out.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror}; choose another --out") from exc
        out_console.print(f"wrote {out}", markup=False)


app.command("perf", help="Inference performance of a model on a chip: fit, batch, TTFT, TPOT, goodput per chip.")(
    cli_errors(perf_command)
)
app.command("latency", help="Estimated network round trip between two places (city, country, site id, lat,lon).")(
    cli_errors(latency_command)
)
for _register in (register_sim, register_report, register_gateway, register_tenants):
    _register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
