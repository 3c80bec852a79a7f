"""The ``sovcloud`` command line: a thin layer over the library.

Every :class:`~sovcloud.errors.SovcloudError` becomes a clear message on stderr and its exit code
(2 for bad input), never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from .cli_latency import latency_command
from .cli_perf import perf_command
from .compiled import compile as compile_world
from .display import show_world
from .errors import ScenarioError, SovcloudError
from .scenario import DEFAULT_SCENARIO, load_scenario
from .world import Scenario

__all__ = ["app", "main"]

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="sovcloud",
    help="Plan, simulate and operate a sovereign, geo-distributed AI inference cloud.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_out = Console(width=160)
_err = Console(stderr=True, width=160)


def cli_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn sovcloud errors raised by a command into messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ScenarioError as exc:
            for problem in exc.problems:
                _err.print(problem.render(), markup=False, highlight=False)
            n = len(exc.problems)
            _err.print(f"error: {n} problem{'s' if n != 1 else ''} in scenario", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except SovcloudError as exc:
            _err.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _scenario(path: str | None) -> Scenario:
    return load_scenario(path if path is not None else DEFAULT_SCENARIO)


@app.command()
@cli_errors
def show(path: str = typer.Argument(None, help="scenario YAML or bundled name (default global-2025)")) -> None:
    """Print the scenario as readable tables: regions, new sites, chips, models, demand, policies."""
    show_world(compile_world(_scenario(path)), _out)


@app.command()
@cli_errors
def validate(path: str = typer.Argument(..., help="scenario YAML file (or bundled name)")) -> None:
    """Check a scenario and report every problem at once (file:line, field, value, fix); exit 2 if any."""
    sc = _scenario(path)
    world = compile_world(sc)
    _out.print(
        f"ok: {path}: scenario '{sc.name}', {len(sc.sites)} sites, {len(sc.accelerators)} chips, "
        f"{len(sc.models)} models, {len(sc.demand.zones)} demand zones, periods {sc.horizon.periods}; "
        f"{int(world.ds.residency.sum())} allowed zone-site pairs",
        markup=False, highlight=False,
    )


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
        out.write_text(text + "\n", encoding="utf-8")
        _out.print(f"wrote {out}", markup=False)


app.command("perf", help="Inference performance of a model on a chip: fit, batch, TTFT, TPOT, goodput per chip.")(
    perf_command
)
app.command("latency", help="Estimated network round trip between two places (city, country, site id, lat,lon).")(
    latency_command
)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
