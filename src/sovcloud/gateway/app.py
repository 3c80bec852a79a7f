"""The gateway as an ASGI app and a server: wiring a config to the plan, ledger, tenants and upstreams.

:func:`build_gateway` turns a :class:`~sovcloud.gateway.config.GatewayConfig` into a
:class:`~sovcloud.gateway.handler.Gateway` (plan -> backends -> route table; ledger; tenant store; upstream
client) plus start/stop hooks; :func:`create_app` makes the Starlette app whose lifespan runs them:
start the ledger's writer, **recover** reservations a crashed run of this instance left pending (before
any new request), probe every upstream once (through :class:`~sovcloud.gateway.upstream.AiohttpUpstream`),
then keep health checks and the tenant cache fresh in the background. :func:`serve` runs it under uvicorn with
uvloop, and freezes the start-up objects out of the garbage collector's reach (``gc.freeze``) so collections
stay short on the hot path. The generating endpoints check their bodies with one
:class:`~sovcloud.gateway.api.RequestValidator`, whose request models also write ``/openapi.json``. The Files and
Batch endpoints are :mod:`sovcloud.gateway.batch_api`; batches a stopped gateway left unfinished resume at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sovcloud.gateway.api import RequestValidator, error_body
from sovcloud.gateway.audio import AudioApi
from sovcloud.gateway.batch_api import BatchApi
from sovcloud.gateway.config import GatewayConfig, load_gateway_config, plan_backends, resolve_targets
from sovcloud.gateway.handler import Gateway, Validator
from sovcloud.gateway.metrics import CONTENT_TYPE, configure_json_logging
from sovcloud.gateway.parts import GatewayParts
from sovcloud.gateway.protocol import GatewayProtocol
from sovcloud.gateway.responses import ResponsesRequests
from sovcloud.gateway.schema import openapi_schema
from sovcloud.gateway.upstream import AiohttpUpstream, UpstreamClient
from sovcloud.metering.lease import LeasedLedger, LeaseOptions, default_journal_dir
from sovcloud.metering.ledger import Ledger, default_ledger_url
from sovcloud.metering.tenants import TenantStore
from sovcloud.routing.router import LoadState, RouteTable

__all__ = ["GatewayApp", "Hook", "build_gateway", "create_app", "quiet_gc", "serve"]

Hook = Callable[[], Awaitable[None]]
log = logging.getLogger("sovcloud.gateway")


def build_gateway(cfg: GatewayConfig, instance_id: str) -> tuple[Gateway, list[Hook], list[Hook]]:
    """The gateway of ``cfg`` and its start and stop hooks (ledger writer, recovery, tenant cache)."""
    world, backends = plan_backends(cfg.plan, cfg.scenario, cfg.period)
    table = RouteTable.build(world, backends)
    targets = resolve_targets(cfg, table.backend_ids)
    url = cfg.ledger or default_ledger_url()
    iid = cfg.instance_id or instance_id
    m = cfg.metering
    ledger: Ledger | LeasedLedger
    if m.mode == "leased":
        journal = Path(m.journal) if m.journal else default_journal_dir(url, iid)
        opts = LeaseOptions(tokens=m.lease_tokens, micro=round(m.lease_usd * 1e6), fraction=m.lease_fraction,
                            idle_s=m.lease_idle_s, write_behind_s=m.write_behind_ms / 1000)
        ledger = LeasedLedger.open(url, iid, journal, options=opts, progress_block=cfg.progress_every_tokens,
                                   fsync=m.journal_fsync)
    else:
        ledger = Ledger.open(url, instance_id=iid, progress_block=cfg.progress_every_tokens)
    try:
        tenants = TenantStore.open(cfg.tenants or url)
    except BaseException:
        if isinstance(ledger, LeasedLedger):
            ledger.journal.close()
        raise
    upstream: UpstreamClient = AiohttpUpstream(cfg.timeouts)
    parts = GatewayParts(table=table, state=LoadState.initial(backends, cfg.routing.queue_factor), targets=targets,
                         upstream=upstream, tenants=tenants, ledger=ledger,
                         residency_rule=tuple(str(r) for r in world.ds.residency_rule.values),
                         tpot_s=backends.tpot_s(1.0))
    gw = Gateway(parts, cfg)
    refresher: list[asyncio.Task[None]] = []

    async def refresh_tenants() -> None:
        while True:
            await asyncio.sleep(cfg.tenant_refresh_s)
            try:
                await asyncio.to_thread(tenants.refresh)
            except Exception:  # keep serving from the cache; the next refresh may succeed
                log.exception("tenant refresh failed")

    async def start() -> None:
        recovered = await asyncio.to_thread(ledger.recover)  # before the first request of this instance
        await ledger.start()
        log.info("ledger ready", extra={"fields": {"ledger": ledger.url, "instance": iid, "recovered": recovered,
                                                   "metering": m.mode, "backends": len(targets)}})
        refresher.append(asyncio.get_running_loop().create_task(refresh_tenants()))

    async def stop() -> None:
        for task in refresher:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await ledger.close()
        tenants.close()

    return gw, [start], [stop]


class GatewayApp:
    """The ASGI app: the generating endpoints (chat completions, completions, embeddings, and
    ``/v1/responses`` over the chat one) are dispatched straight from the scope (no router, no middleware on
    the hot path); everything else (models, metrics, health, schema, errors, lifespan) goes to a Starlette app."""

    def __init__(self, gw: Gateway, rest: Starlette, requests: RequestValidator) -> None:
        self.gateway, self.rest = gw, rest
        self._hot: dict[str, tuple[str, str, Validator]] = {
            "/v1/chat/completions": ("chat", "/chat/completions", requests.chat),
            "/v1/completions": ("completions", "/completions", requests.completion),
            "/v1/embeddings": ("embeddings", "/embeddings", requests.embedding),
        }
        self._responses = ResponsesRequests(requests)  # /v1/responses: the chat path, translated

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self._hot.get(scope["path"]) if scope["type"] == "http" else None
        responses = hot is None and scope["type"] == "http" and scope["path"] == "/v1/responses"
        if hot is None and not responses:
            await self.rest(scope, receive, send)
        elif scope["method"] != "POST":
            body = error_body("Method not allowed on this path; use POST (see /openapi.json).",
                              "invalid_request_error", None, "method_not_allowed")
            await Response(body, 405, headers={"Allow": "POST"}, media_type="application/json")(scope, receive, send)
        elif hot is None:
            response = await self.gateway.responses(scope, receive, self._responses)
            await response(scope, receive, send)
        else:
            response = await self.gateway.generate(scope, receive, *hot)
            await response(scope, receive, send)


def create_app(gw: Gateway, on_start: Sequence[Hook] = (), on_stop: Sequence[Hook] = (), *,
               health_checks: bool = True, freeze_gc: bool = False) -> GatewayApp:
    """The ASGI app of ``gw``; ``on_start`` hooks run before the first request, ``on_stop`` after the last."""
    lim = gw.cfg.limits
    requests = RequestValidator(lim.default_max_tokens, lim.max_tokens_cap)
    batches = BatchApi(gw, {"/v1/chat/completions": ("chat", "/chat/completions", requests.chat),
                            "/v1/completions": ("completions", "/completions", requests.completion),
                            "/v1/embeddings": ("embeddings", "/embeddings", requests.embedding)})
    schema = orjson.dumps(openapi_schema(list(gw.parts.table.zones), requests.models))

    async def openapi(request: Request) -> Response:
        return Response(schema, media_type="application/json")

    async def metrics(request: Request) -> Response:
        return Response(gw.metrics.render(), headers={"content-type": CONTENT_TYPE})

    async def health(request: Request) -> Response:
        st = gw.parts.state
        body = {"status": "ok", "backends": len(st.healthy), "healthy": int(st.healthy.sum())}
        return Response(orjson.dumps(body), media_type="application/json")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        what = {404: "Unknown path; the API is under /v1 (see /openapi.json).",
                405: "Method not allowed on this path (see /openapi.json)."}.get(status, "Request failed.")
        code = {404: "unknown_url", 405: "method_not_allowed"}.get(status)
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}  # 405 keeps its Allow header
        return Response(error_body(what, "invalid_request_error", None, code), status, headers=headers,
                        media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for hook in on_start:
            await hook()
        resumed = await batches.runner.resume()
        if resumed:
            log.info("batches resumed", extra={"fields": {"batches": resumed}})
        if health_checks:
            await gw.health.check_all(gw.parts.upstream, gw.parts.targets)
            gw.health.start(gw.parts.upstream, gw.parts.targets)
        flusher = asyncio.get_running_loop().create_task(gw.access.run())
        if freeze_gc:
            quiet_gc()
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await batches.runner.close()
            await gw.health.stop()
            await gw.parts.upstream.close()
            for hook in on_stop:
                await hook()

    routes = [
        Route("/v1/models", gw.models, methods=["GET"]),
        Route("/v1/models/{model:path}", gw.model, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        *batches.routes(),
        *AudioApi(gw).routes(),
    ]
    rest = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    return GatewayApp(gw, rest, requests)


FULL_GC_EVERY = 100  # middle-generation collections per full one (CPython's default: 10)


def quiet_gc() -> None:
    """Keep the garbage collector's pauses off a serving process's requests.

    The start-up objects (scenario, plan, modules) are frozen out of the collector's reach, and a full
    collection runs after ``FULL_GC_EVERY`` collections of the middle generation instead of 10. Measured in
    ``sovcloud serve`` at 1,200 req/s: a full collection paused the event loop for 2.6-5.4 ms about every
    4 s, long enough to delay every request then in flight, about 1 % of them, which is the p99. Request
    objects die by reference counting (the gateway leaves no reference cycles behind: the collections
    measured freed nothing), so rarer full collections cost no memory."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_GC_EVERY)


def serve(config: Path, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the gateway of ``config`` under uvicorn (uvloop, one process) until interrupted."""
    cfg = load_gateway_config(config)
    configure_json_logging(logging.getLevelName(log_level.upper()))
    gw, start, stop = build_gateway(cfg, f"{socket.gethostname()}:{port}")
    app = create_app(gw, start, stop, freeze_gc=True)
    # The ledger's writer thread needs the GIL for short moments between SQL statements; with the default 5 ms
    # switch interval a busy event loop makes it wait up to 5 ms each time (a convoy that adds milliseconds to
    # every reservation). 0.5 ms keeps those waits short; the loop loses little.
    sys.setswitchinterval(0.0005)
    # proxy_headers off: the gateway never reads the client address, so uvicorn's X-Forwarded-* middleware
    # would only cost a call per request
    uv = uvicorn.Config(app, host=host, port=port, loop="uvloop", http=GatewayProtocol, lifespan="on",
                        access_log=False, log_config=None, log_level=log_level, timeout_graceful_shutdown=10,
                        backlog=4096, proxy_headers=False)
    uvicorn.Server(uv).run()
