"""SSE keep-alive: a comment goes to the client on every long gap of a stream, and nothing else changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import orjson

from sovcloud.gateway.app import create_app
from sovcloud.gateway.stream import KEEPALIVE
from sovcloud.gateway.upstream import UpstreamTarget
from sovcloud.metering.tenants import Tenant
from sovcloud.routing.router import RouteTable
from tests.support.gateway import FakeUpstream, fake_gateway, run

KEY = "sk-sov-k"


class _Slow:
    status, content_type = 200, "text/event-stream"

    def __init__(self, events: list[bytes], gap_s: float) -> None:
        self.events, self.gap_s = events, gap_s

    async def read(self) -> bytes:
        return b""

    async def chunks(self) -> AsyncIterator[bytes]:
        for i, e in enumerate(self.events):
            if i:
                await asyncio.sleep(self.gap_s)  # a slow engine: long silences between events
            yield e

    def close(self) -> None:
        pass


class SlowUpstream(FakeUpstream):
    async def post(self, target: UpstreamTarget, path: str, body: bytes, stream: bool,
                   content_type: str | None = None) -> Any:
        self.calls.append(target.backend_id)
        ev = [b"data: " + orjson.dumps({"id": "x", "choices": [{"index": 0, "delta": {"content": "hi"}}]}) + b"\n\n"
              for _ in range(3)]
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        ev.append(b"data: " + orjson.dumps({"id": "x", "choices": [], "usage": usage}) + b"\n\ndata: [DONE]\n\n")
        return _Slow(ev, 0.12)


def _stream(keepalive_s: float, path: str = "/v1/chat/completions") -> bytes:
    table = RouteTable(zones=("z0",), models=("m",), backend_ids=("s0/m/c",), backend_site=("s0",),
                       model=np.zeros(1, np.int64), allowed=np.ones((1, 1), bool), rtt_ms=np.zeros((1, 1)))
    gw = fake_gateway(table, SlowUpstream(), {KEY: Tenant("k", "K", "z0")}, timeouts={"keepalive_s": keepalive_s})
    body: dict[str, Any] = {"model": "m", "stream": True, "max_tokens": 4}
    if path == "/v1/responses":
        body["input"] = "hello"
    else:
        body["messages"] = [{"role": "user", "content": "hello"}]

    async def go() -> bytes:
        app = create_app(gw, health_checks=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            r = await c.post(path, json=body, headers={"authorization": f"Bearer {KEY}"})
            assert r.status_code == 200
            return r.content

    out: bytes = run(go())
    return out


def test_long_gaps_get_keep_alive_comments_and_the_events_are_unchanged() -> None:
    slow = _stream(0.03)
    assert slow.count(KEEPALIVE) >= 3  # three gaps of 0.12 s, a comment every 0.03 s of silence
    assert _stream(10.0).count(KEEPALIVE) == 0  # no gap that long: none
    assert slow.replace(KEEPALIVE, b"") == _stream(10.0)


def test_keep_alive_comments_pass_through_the_responses_stream() -> None:
    assert _stream(0.03, "/v1/responses").count(KEEPALIVE) >= 3
