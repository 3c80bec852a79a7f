"""``sovcloud simulate`` and ``sovcloud verify`` (commands registered on the main app by :func:`register`).

``sovcloud simulate --plan out/plan.json [--trace NAME|FILE | --synthetic] [--hours H] [--shock ...]
[--seed N] [--sample F] [--out DIR]`` replays traffic through the plan's fleet hour by hour and
writes ``summary.json`` and Parquet tables (see :mod:`sovcloud.sim.output`); bad inputs are one-line
messages with exit code 2. ``sovcloud verify --plan out/plan.json`` (and ``sovcloud plan --check``) replays the
plan's busiest day and prints it beside the plan's claims (:mod:`sovcloud.sim.verify`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sovcloud.errors import UsageError

from .common import cli_errors, err_console, out_console

__all__ = ["check_plan", "register", "simulate_command", "verify_command"]


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
    batch_tick: float = typer.Option(5.0, "--batch-tick", help="deferred batch work is released every this many "
                                                               "simulated seconds"),
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
                       shocks=tuple(shock or ()), period=period, batch_tick_s=batch_tick)
    with _progress_bar(config.hours) as progress:
        run = simulate(plan, config, progress)
    outputs = build_outputs(run)
    written = write_outputs(outputs, out)
    print_summary(outputs, out_console)
    out_console.print(f"wrote {', '.join(p.name for p in written)} to {out}", markup=False, highlight=False)


@contextmanager
def _progress_bar(hours: float | None) -> Iterator[Callable[[float, float], None]]:
    """A rich progress bar on stderr fed by the simulator's ``progress(hours_done, hours_total)``."""
    columns = (TextColumn("simulating"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.1f} h"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("simulate", total=hours or 1.0)

        def progress(done: float, total: float) -> None:
            bar.update(task, completed=done, total=total)

        yield progress


def check_plan(plan: Path, out: Path, sample: float | None) -> bool:
    """Replay ``plan`` for its busiest period's day, print it beside the plan's claims, write ``out``;
    True when every workload and continent meets its SLO for >= 95 % of its requests with < 0.5 % saturated."""
    from sovcloud.sim.output import build_outputs, write_outputs
    from sovcloud.sim.run import SimConfig, simulate
    from sovcloud.sim.verify import check_run, check_table

    config = SimConfig(sample=sample)
    with _progress_bar(24.0) as progress:
        run = simulate(plan, config, progress)
    outputs = build_outputs(run)
    write_outputs(outputs, out)
    check = check_run(run)
    (out / "check.json").write_text(json.dumps(check.to_json(), indent=2) + "\n", encoding="utf-8")
    out_console.print(check_table(check))
    for line in check.failures:
        out_console.print(f"[red]check failed:[/] {line}", highlight=False)
    out_console.print(f"replayed {run.requests:,} requests (sample {run.sample:.3g}) in {run.wall_s:.0f} s; "
                      f"wrote the simulation and check.json to {out}", markup=False, highlight=False)
    return check.ok


def verify_command(
    plan: Path = typer.Option(Path("out/plan.json"), "--plan", "-p", help="plan.json written by `sovcloud plan`"),
    sample: float | None = typer.Option(None, "--sample", help="fraction of arrivals and slots to replay "
                                                               "(default: automatic)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for the replay (default: check/ beside "
                                                              "plan.json)"),
) -> None:
    """Replay a plan's busiest day and set it beside the plan's claims (exit 1 when it does not hold)."""
    folder = plan if plan.is_dir() else plan.parent
    if not check_plan(plan, out or folder / "check", sample):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``sovcloud simulate`` to ``app``."""
    app.command("simulate")(cli_errors(simulate_command))
    app.command("verify")(cli_errors(verify_command))
