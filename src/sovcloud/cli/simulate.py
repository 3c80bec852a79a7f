"""``sovcloud simulate`` (commands registered on the main app by :func:`register`).

``sovcloud simulate --plan out/plan.json [--trace NAME|FILE | --synthetic] [--hours H] [--shock ...]
[--seed N] [--sample F] [--out DIR]`` replays traffic through the plan's fleet hour by hour and
writes ``summary.json`` and Parquet tables (see :mod:`sovcloud.sim.output`); bad inputs are one-line
messages with exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sovcloud.errors import UsageError

from .common import cli_errors, err_console, out_console

__all__ = ["register", "simulate_command"]


def simulate_command(
    plan: Path = typer.Option(Path("out/plan.json"), "--plan", "-p", help="plan.json written by `sovcloud plan`"),
    trace: str | None = typer.Option(None, "--trace", help="replay a trace: azure-conv, azure-code, mooncake or a "
                                                           "file (Azure CSV 2023/2024, Mooncake JSONL)"),
    synthetic: bool = typer.Option(False, "--synthetic", help="synthetic Poisson traffic from the demand (default)"),
    hours: float | None = typer.Option(None, "--hours", help="simulated hours (default 24, or the trace's span)"),
    shock: list[str] = typer.Option(None, "--shock", help="kind:target[:factor][@start[-end]] in hours from the "
                                                          "start, e.g. outage:eu-west-1@6h-12h; repeatable"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same result)"),
    sample: float | None = typer.Option(None, "--sample", help="fraction of arrivals and of every backend's slots "
                                                               "to simulate (default: automatic, ~2e7 requests)"),
    period: int | None = typer.Option(None, "--period", help="plan period (default: the last)"),
    trace_scale: float = typer.Option(1.0, "--trace-scale", help="multiply the trace's arrival rate"),
    start_hour: int | None = typer.Option(None, "--start-hour", help="UTC hour at the start (default 0, or the "
                                                                     "trace's first hour)"),
    tick: float = typer.Option(1.0, "--tick", help="routing tick in simulated seconds"),
    queue_factor: float = typer.Option(1.0, "--queue-factor", help="admit up to slots x (1 + factor) per backend"),
    burstiness: float = typer.Option(0.25, "--burstiness", help="coefficient of variation of the per-minute rate"),
    out: Path = typer.Option(Path("out/sim"), "--out", "-o", help="folder for summary.json and the Parquet tables"),
) -> None:
    """Replay real or synthetic traffic through a plan, under shocks; write summary.json and Parquet."""
    if synthetic and trace is not None:
        raise UsageError("--synthetic and --trace exclude each other; fix: give one of them")
    from sovcloud.sim.output import build_outputs, print_summary, write_outputs
    from sovcloud.sim.run import SimConfig, simulate

    config = SimConfig(trace=trace, hours=hours, sample=sample, seed=seed, tick_s=tick, queue_factor=queue_factor,
                       burstiness=burstiness, start_hour=start_hour, trace_scale=trace_scale,
                       shocks=tuple(shock or ()), period=period)
    columns = (TextColumn("simulating"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.1f} h"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("simulate", total=config.hours or 1.0)

        def progress(done: float, total: float) -> None:
            bar.update(task, completed=done, total=total)

        run = simulate(plan, config, progress)
    outputs = build_outputs(run)
    written = write_outputs(outputs, out)
    print_summary(outputs, out_console)
    out_console.print(f"wrote {', '.join(p.name for p in written)} to {out}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``sovcloud simulate`` to ``app``."""
    app.command("simulate")(cli_errors(simulate_command))
