"""``sovcloud serve`` and ``sovcloud emulate`` (registered on the main app by :func:`register`)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from sovcloud.errors import UsageError

from .common import cli_errors, out_console

__all__ = ["register"]


def _check_port(port: int) -> None:
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port; give 1-65535, e.g. 8000")


def serve(
    config: Path = typer.Option(..., "--config", "-c", help="gateway config YAML (see docs/gateway-server.md)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (default: this machine only)"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error"),
) -> None:
    """Run the OpenAI-compatible gateway: residency-safe routing, metering, metrics at /metrics."""
    _check_port(port)
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise UsageError(f"--log-level {log_level!r}: use debug, info, warning or error")
    from sovcloud.gateway.app import serve as serve_gateway

    serve_gateway(config, host, port, log_level.lower())


def emulate(
    plan: Path = typer.Option(..., "--plan", help="plan.json (or its folder) whose backends to emulate"),
    scenario: str = typer.Option(None, "--scenario", help="scenario (default: the one the plan names)"),
    period: int = typer.Option(None, "--period", help="plan period (default: the last)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind"),
    port: int = typer.Option(8100, "--port", help="TCP port (every backend under /<site>/<model>/<chip>/v1)"),
    time_scale: float = typer.Option(1.0, "--time-scale", help="multiply every duration (0.01 = 100x faster)"),
    fixed_ms: float = typer.Option(None, "--fixed-ms", help="fixed-latency mode: answer after this many ms"),
    chunks: int = typer.Option(20, "--chunks", help="fixed mode: events per stream"),
    chunk_ms: float = typer.Option(5.0, "--chunk-ms", help="fixed mode: ms between stream events"),
    output_tokens: int = typer.Option(None, "--output-tokens", help="tokens per answer (default: typical)"),
    write_config: Path = typer.Option(None, "--write-config", help="write a gateway config pointing here"),
    ledger: str = typer.Option(None, "--ledger", help="ledger URL to put in the written config"),
) -> None:
    """Serve emulated OpenAI-compatible backends of a plan, with load-dependent TTFT/TPOT (physics)."""
    _check_port(port)
    if time_scale <= 0:
        raise UsageError(f"--time-scale {time_scale} must be positive, e.g. 0.01")
    if (fixed_ms is not None and fixed_ms < 0) or chunk_ms < 0 or chunks < 1:
        raise UsageError("--fixed-ms and --chunk-ms must be >= 0 and --chunks >= 1")
    if output_tokens is not None and output_tokens < 1:
        raise UsageError(f"--output-tokens {output_tokens} must be >= 1")
    import uvicorn

    from sovcloud.gateway.app import quiet_gc
    from sovcloud.gateway.config import plan_backends, write_gateway_config
    from sovcloud.gateway.emulator import Emulator, EmulatorOptions
    from sovcloud.gateway.metrics import configure_json_logging

    _, backends = plan_backends(plan, scenario, period)
    if len(backends) == 0:
        raise UsageError(f"{plan}: the plan has no deployments in period {backends.period}; nothing to emulate")
    emu = Emulator(backends, EmulatorOptions(time_scale=time_scale, fixed_ms=fixed_ms, chunks=chunks,
                                             chunk_ms=chunk_ms, output_tokens=output_tokens))
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if write_config is not None:
        write_gateway_config(write_config, plan if plan.suffix == ".json" else plan / "plan.json",
                             base + "/{backend}/v1", ledger)
        out_console.print(f"wrote {write_config}", markup=False, highlight=False)
    for bid in backends.ids:
        out_console.print(f"{bid}: {base}/{bid}/v1", markup=False, highlight=False)
    configure_json_logging(logging.INFO)
    quiet_gc()  # without it, a full collection over the scenario's objects paused the emulator 20-190 ms
    uv = uvicorn.Config(emu.app(), host=host, port=port, loop="uvloop", lifespan="off", access_log=False,
                        log_config=None, backlog=4096)
    uvicorn.Server(uv).run()


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``emulate`` to ``app``."""
    app.command("serve")(cli_errors(serve))
    app.command("emulate")(cli_errors(emulate))
