"""The gateway's HTTP protocol on a real socket: framing errors in OpenAI's shape, half-closed clients answered."""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

from sovcloud.gateway.app import create_app
from sovcloud.gateway.protocol import GatewayProtocol
from sovcloud.gateway.upstream import UpstreamTarget
from sovcloud.metering.tenants import Tenant
from sovcloud.routing.router import RouteTable
from tests.support.gateway import FakeUpstream, fake_gateway, serve_app


class SlowUpstream(FakeUpstream):
    """Answers after 0.3 s, as an engine does: the client's end of input arrives before the answer."""

    async def post(self, target: UpstreamTarget, path: str, body: bytes, stream: bool,
                   content_type: str | None = None) -> Any:
        await asyncio.sleep(0.3)
        return await super().post(target, path, body, stream, content_type)


def _app() -> object:
    table = RouteTable(zones=("z0",), models=("m",), backend_ids=("s0/m/c",), backend_site=("s0",),
                       model=np.zeros(1, np.int64), allowed=np.ones((1, 1), bool), rtt_ms=np.zeros((1, 1)))
    return create_app(fake_gateway(table, SlowUpstream(), {"sk-sov-p": Tenant("p", "P", "z0")}), health_checks=False)


def _exchange(url: str, data: bytes, half_close: bool = False) -> bytes:
    u = urlsplit(url)
    with socket.create_connection((u.hostname or "127.0.0.1", u.port or 80), timeout=10) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                length = [int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")]
                if length and len(body) >= length[0]:
                    return out


def test_a_framing_error_is_answered_in_openai_json() -> None:
    with serve_app(_app(), http=GatewayProtocol) as url:
        out = _exchange(url, b"NOT A REQUEST\x00\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
    err = orjson.loads(body)["error"]
    assert err["code"] == "invalid_http" and err["type"] == "invalid_request_error"


def test_a_client_that_half_closes_after_its_request_gets_the_answer() -> None:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-sov-p\r\n"
           b"content-type: application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with serve_app(_app(), http=GatewayProtocol) as url:
        out = _exchange(url, req, half_close=True)
    assert out.startswith(b"HTTP/1.1 200") and b'"chat.completion"' in out
