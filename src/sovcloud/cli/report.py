"""``sovcloud report`` (commands registered on the main app by :func:`register`).

``sovcloud report --plan out/plan.json [--sim DIR] [--out FILE]`` rebuilds the self-contained HTML
report of a plan (default output: ``report.html`` next to ``plan.json``). Bad inputs (a missing
or malformed plan, a simulation folder of another schema) are one-line messages with exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .common import cli_errors, out_console

__all__ = ["register", "report_command"]


def report_command(
    plan: Path = typer.Option(Path("out/plan.json"), "--plan", "-p",
                              help="plan.json written by `sovcloud plan` (or its folder)"),
    sim: Path | None = typer.Option(None, "--sim", help="folder written by `sovcloud simulate` (summary.json)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="HTML file to write (default: report.html next to "
                                                               "plan.json)"),
) -> None:
    """Write the self-contained HTML report of a plan (map, charts, shortfalls, sources), opening offline."""
    from sovcloud.report.write import write_report

    folder = plan if plan.is_dir() else plan.parent
    target = out if out is not None else folder / "report.html"
    written = write_report(plan, target, sim)
    size_mb = written.stat().st_size / 1e6
    out_console.print(f"wrote {written} ({size_mb:.1f} MB)", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``sovcloud report`` to ``app``."""
    app.command("report")(cli_errors(report_command))
