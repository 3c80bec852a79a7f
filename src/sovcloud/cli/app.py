"""The ``sovcloud`` typer application: every command group registered on one app.

Registering a command imports only its module here (typer and rich); the library behind it is imported
when the command runs. Every :class:`~sovcloud.errors.SovcloudError` becomes a clear message on stderr
and its exit code (2 for bad input), never a traceback.
"""

from __future__ import annotations

import typer

from . import gateway, latency, perf, plan, report, scenario, simulate, tenants

__all__ = ["app", "main"]

app = typer.Typer(
    name="sovcloud",
    help="Plan, simulate and operate a sovereign, geo-distributed AI inference cloud.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for _module in (scenario, plan, perf, latency, simulate, report, gateway, tenants):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
