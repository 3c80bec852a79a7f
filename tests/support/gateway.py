"""Helpers shared by the gateway tests: a tiny plan, servers in threads, an in-process fake upstream.

(Named ``test_*`` so it lives with the tests it serves; it defines no tests itself.)
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg
import pytest
import uvicorn

from sovcloud.errors import UnknownEntity, UpstreamError
from sovcloud.gateway.config import GatewayConfig, UpstreamTarget
from sovcloud.gateway.emulator import write_fixed_plan
from sovcloud.gateway.handler import Gateway
from sovcloud.gateway.parts import GatewayParts
from sovcloud.metering.book import Reservation
from sovcloud.metering.tenants import Tenant
from sovcloud.routing.router import LoadState, RouteTable

__all__ = ["DATA", "PG_ADMIN", "FakeLedger", "FakeTenants", "FakeUpstream", "fake_gateway", "pg_database", "run",
           "serve_app", "tiny_plan"]

DATA = Path(__file__).parents[1] / "data"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
EU_AND_US = [("de-fra", "h100-sxm", "qwen3-8b", 8, 1), ("fr-par", "h100-sxm", "qwen3-8b", 8, 1),
             ("us-ash", "h100-sxm", "qwen3-8b", 8, 1)]


def tiny_plan(folder: Path) -> Path:
    """tiny-a (zones z-de, z-fr: data must stay in the EU; z-us: anywhere) with one backend per site."""
    return write_fixed_plan(folder / "plan.json", str(DATA / "tiny_a.yaml"), EU_AND_US)


@contextmanager
def serve_app(app: Any, timeout: float = 60.0, http: Any = "auto") -> Iterator[str]:
    """Run an ASGI app under uvicorn (``http``: its HTTP protocol) in a thread on a free 127.0.0.1 port; yields its
    base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None, access_log=False,
                                           loop="asyncio", timeout_graceful_shutdown=5, backlog=2048, http=http))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > end:
            server.should_exit = True
            thread.join(10)
            sock.close()
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); FAILS, never skips, when PostgreSQL is down."""
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({str(exc).strip().splitlines()[0]}); start "
                    "it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`")
    name = f"sovcloud_gw_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ---- in-process fakes -----------------------------------------------------------------------------------
class _Resp:
    def __init__(self, status: int, body: bytes, events: list[bytes] | None = None,
                 content_type: str | None = None) -> None:
        self.status, self._body, self._events = status, body, events
        self.content_type = content_type or ("text/event-stream" if events is not None else "application/json")

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._events is None:
            self._events = [self._body]
        while self._events:  # one shared position, like a network stream read in two loops
            yield self._events.pop(0)

    def close(self) -> None:
        pass


class FakeUpstream:
    """Records every backend contacted; per backend: "ok", "connect" (unreachable), "500", "400", "down"."""

    def __init__(self, behaviour: dict[str, str] | None = None, completion_tokens: int = 3) -> None:
        self.behaviour = behaviour or {}
        self.calls: list[str] = []
        self.completion_tokens = completion_tokens

    async def post(self, target: UpstreamTarget, path: str, body: bytes, stream: bool,
                   content_type: str | None = None) -> _Resp:
        self.calls.append(target.backend_id)
        mode = self.behaviour.get(target.backend_id, "ok")
        if mode in ("connect", "down"):
            raise UpstreamError("connection refused (fake)")
        if mode in ("500", "400"):
            err = {"error": {"message": "fake", "type": "x", "param": None, "code": None}}
            return _Resp(int(mode), orjson.dumps(err))
        if path == "/audio/speech":
            return _Resp(200, b"RIFF" + bytes(60), content_type="audio/wav")
        if path == "/audio/transcriptions":
            use = {"type": "tokens", "input_tokens": 40, "output_tokens": 3, "total_tokens": 43}
            return _Resp(200, orjson.dumps({"text": "fake transcript", "usage": use}))
        req = orjson.loads(body)
        n = min(self.completion_tokens, int(req.get("max_tokens") or req.get("max_completion_tokens") or 16))
        usage = {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}
        if path == "/embeddings":
            return _Resp(200, orjson.dumps({"object": "list", "data": [{"object": "embedding", "index": 0,
                                                                        "embedding": [0.1]}], "usage": usage}))
        if not stream:
            msg = {"index": 0, "message": {"role": "assistant", "content": "hi " * n}, "finish_reason": "length"}
            return _Resp(200, orjson.dumps({"id": "x", "object": "chat.completion", "choices": [msg],
                                            "usage": usage}))
        events = [b"data: " + orjson.dumps({"id": "x", "choices": [{"index": 0, "delta": {"content": "hi"}}]})
                  + b"\n\n" for _ in range(n)]
        events.append(b"data: " + orjson.dumps({"id": "x", "choices": [], "usage": usage}) + b"\n\ndata: [DONE]\n\n")
        return _Resp(200, b"", events)

    async def probe(self, target: UpstreamTarget, path: str, timeout_s: float) -> bool:
        return self.behaviour.get(target.backend_id, "ok") != "down"

    async def close(self) -> None:
        pass


class FakeTenants:
    def __init__(self, tenants: dict[str, Tenant]) -> None:
        self.tenants = tenants

    def authenticate(self, api_key: str) -> Tenant | None:
        return self.tenants.get(api_key)

    def get(self, tenant_id: str) -> Tenant:
        found = [t for t in self.tenants.values() if t.id == tenant_id]
        if not found:
            raise UnknownEntity(f"tenant {tenant_id!r} is not known")
        return found[0]


class FakeLedger:
    """Always reserves; remembers what was settled and released."""

    premark = True

    def __init__(self) -> None:
        self.settled: list[tuple[str, int, int]] = []
        self.released: list[str] = []
        self.progress_marks: list[int] = []

    async def reserve(self, tenant: Tenant, request_id: str, model: str, prompt_tokens: int,
                      max_tokens: int) -> Reservation:
        return Reservation(uuid.uuid4().hex, tenant.id, model, prompt_tokens + max_tokens, 0.0, prompt_tokens,
                           max_tokens, request_id=request_id)

    async def progress(self, reservation: Reservation, completion_tokens: int) -> None:
        self.progress_marks.append(completion_tokens)

    async def settle(self, reservation: Reservation, prompt_tokens: int, completion_tokens: int) -> None:
        self.settled.append((reservation.tenant_id, prompt_tokens, completion_tokens))

    async def release(self, reservation: Reservation) -> None:
        self.released.append(reservation.tenant_id)


def fake_gateway(table: RouteTable, upstream: FakeUpstream, tenants: dict[str, Tenant],
                 ledger: FakeLedger | None = None, *, clock: Callable[[], float] = time.monotonic,
                 **cfg: Any) -> Gateway:
    """A gateway over ``table`` with fakes for the upstream, the tenant store and the ledger; its rate limiter
    reads ``clock``."""
    B = len(table.backend_ids)
    state = LoadState(healthy=np.ones(B, bool), inflight=np.zeros(B), slots=np.full(B, 8.0),
                      service_s=np.full(B, 1.0), ttft_s=np.full(B, 0.05), limit=np.full(B, 64.0))
    targets = tuple(UpstreamTarget(backend_id=b, url=f"http://fake/{b}", api_key=None, model=table.models[m])
                    for b, m in zip(table.backend_ids, table.model, strict=True))
    parts = GatewayParts(table=table, state=state, targets=targets, upstream=upstream, tenants=FakeTenants(tenants),
                         ledger=ledger or FakeLedger(), residency_rule=tuple("rule" for _ in table.zones),
                         tpot_s=np.zeros(B))
    return Gateway(parts, GatewayConfig.model_validate({"plan": "-", "log_requests": False, **cfg}), clock=clock)


def run(coro: Any) -> Any:
    return asyncio.run(coro)
