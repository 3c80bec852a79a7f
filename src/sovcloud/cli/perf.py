"""``sovcloud perf``: one performance estimate as a table or JSON.

:func:`register` adds :func:`perf_command` to the app. The model and chip ids are resolved in the
bundled default scenario's catalog, loaded inside the command. Invalid inputs raise :mod:`sovcloud.errors`
exceptions (mapped to one-line messages, exit 2); a model that cannot run prints its reason with
``fits``/``ok`` false (exit 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from sovcloud.errors import PhysicsError
from sovcloud.vocab import SLO_SCENARIOS as SCENARIOS

from .common import cli_errors

if TYPE_CHECKING:
    from sovcloud.physics.perf import PerfResult

__all__ = ["perf_command", "register", "render_table"]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "-" if value is None else str(value)


def render_table(result: PerfResult) -> Table:
    """A two-column rich table of ``result``."""
    title = f"{result.model} on {result.chips} x {result.chip} ({result.precision}, TP{result.tp} x {result.replicas})"
    table = Table(title=title, show_header=True)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [
        ("fits", result.fits),
        ("meets SLOs", result.meets_slo),
        ("reason", result.reason),
        ("batch (of max)", f"{result.batch} (of {result.max_batch})"),
        ("TTFT s", result.ttft_s),
        ("TPOT s", result.tpot_s),
        ("prefill tokens/s", result.prefill_tokens_per_s),
        ("decode tokens/s", result.decode_tokens_per_s),
        ("output tokens/s/chip", result.output_tokens_per_s_per_chip),
        ("bound", result.bound),
        ("weights GB", result.weight_gb),
        (f"KV GB per sequence ({result.kv_precision})", result.kv_gb_per_sequence),
        ("KV budget GB", result.kv_budget_gb),
    ]
    for name, value in rows:
        table.add_row(name, _fmt(value))
    return table


def perf_command(
    model: str = typer.Option(..., "--model", help="model id, e.g. llama-3.1-70b"),
    chip: str = typer.Option(..., "--chip", help="accelerator id, e.g. h100-sxm"),
    chips: int = typer.Option(1, "--chips", help="chips serving the model (split into TP groups x replicas)"),
    tp: int | None = typer.Option(None, "--tp", help="tensor-parallel degree (must divide --chips); default: the "
                                  "degree with the most goodput per chip"),
    precision: str = typer.Option("bf16", "--precision", help="bf16, fp16, fp8, fp4 or int8"),
    input_tokens: int = typer.Option(..., "--input", help="input (prompt) tokens per request"),
    output_tokens: int = typer.Option(..., "--output", help="output tokens per request"),
    ttft: float | None = typer.Option(None, "--ttft", help="time-to-first-token SLO, s"),
    tpot: float | None = typer.Option(None, "--tpot", help="time-per-output-token SLO, s"),
    scenario: str | None = typer.Option(
        None, "--scenario", help=f"named SLOs: {', '.join(SCENARIOS)} (--ttft/--tpot override)"
    ),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Estimate batch, TTFT, TPOT and goodput per chip of one deployment."""
    from sovcloud.physics.parallel import best_split
    from sovcloud.physics.perf import estimate
    from sovcloud.scenario.loader import load_scenario

    ttft_slo, tpot_slo = ttft, tpot
    if scenario is not None:
        named = SCENARIOS.get(scenario)
        if named is None:
            raise PhysicsError(f"unknown scenario '{scenario}'; use one of {', '.join(SCENARIOS)}")
        ttft_slo = ttft if ttft is not None else named[0]
        tpot_slo = tpot if tpot is not None else named[1]
    if tp is not None and (tp < 1 or chips < 1 or chips % tp):
        raise PhysicsError(f"--tp {tp} must be >= 1 and divide --chips {chips}; e.g. --chips 8 --tp 2 "
                           "(4 replicas), or leave --tp out to choose the best degree")
    catalog = load_scenario()
    arch, accel = catalog.model(model), catalog.chip(chip)
    if tp is None:
        result = best_split(arch, accel, chips, precision, input_tokens, output_tokens, ttft_slo, tpot_slo)
    else:
        one = estimate(arch, accel, tp, precision, input_tokens, output_tokens, ttft_slo, tpot_slo)
        k = chips // tp
        result = replace(one, chips=chips, replicas=k, prefill_tokens_per_s=one.prefill_tokens_per_s * k,
                         decode_tokens_per_s=one.decode_tokens_per_s * k)
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        Console().print(render_table(result))


def register(app: typer.Typer) -> None:
    """Add ``perf`` to ``app``."""
    app.command("perf", help="Inference performance of a model on a chip: fit, batch, TTFT, TPOT, goodput per "
                "chip.")(cli_errors(perf_command))
