"""``sovcloud show``, ``sovcloud validate`` and ``sovcloud schema``: the scenario itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from sovcloud.errors import UsageError
from sovcloud.vocab import DEFAULT_SCENARIO

from .common import cli_errors, out_console

__all__ = ["register"]

PATH_HELP = f"scenario YAML or bundled name (default {DEFAULT_SCENARIO})"


def show(path: str = typer.Argument(None, help=PATH_HELP)) -> None:
    """Print the scenario as readable tables: regions, new sites, chips, models, demand, policies."""
    from sovcloud.scenario.loader import load_scenario
    from sovcloud.world.compiled import compile as compile_world
    from sovcloud.world.display import show_world

    show_world(compile_world(load_scenario(path or DEFAULT_SCENARIO)), out_console)


def validate(path: str = typer.Argument(..., help="scenario YAML file (or bundled name)")) -> None:
    """Check a scenario and report every problem at once (file:line, field, value, fix); exit 2 if any."""
    from sovcloud.scenario.loader import load_scenario
    from sovcloud.world.compiled import compile as compile_world

    sc = load_scenario(path)
    world = compile_world(sc)
    out_console.print(
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


def schema(
    out: Path = typer.Option(None, "--out", "-o", help="write to this file instead of stdout"),
    overlay: bool = typer.Option(False, "--overlay", help="no required fields (for files that use extends)"),
) -> None:
    """Write the scenario JSON Schema (for editor completion and checks)."""
    from sovcloud.scenario.model import Scenario

    doc = Scenario.model_json_schema()
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "sovcloud scenario" + (" overlay" if overlay else "")
    if overlay:
        _strip_required(doc)
    text = json.dumps(doc, indent=2)
    if out is None:
        sys.stdout.write(text + "\n")
        return
    try:
        out.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror}; choose another --out") from exc
    out_console.print(f"wrote {out}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``show``, ``validate`` and ``schema`` to ``app``."""
    app.command("show")(cli_errors(show))
    app.command("validate")(cli_errors(validate))
    app.command("schema")(cli_errors(schema))
