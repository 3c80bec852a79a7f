"""Audio pass-through: what is reserved and settled, the upload re-encoded with the upstream's model name, limits."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from sovcloud.gateway.app import create_app
from sovcloud.gateway.upstream import UpstreamTarget
from sovcloud.metering.tenants import Tenant
from sovcloud.routing.router import RouteTable
from tests.support.gateway import FakeLedger, FakeUpstream, fake_gateway, run

KEY = "sk-sov-a"


class Recording(FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[tuple[str, bytes, str | None]] = []

    async def post(self, target: UpstreamTarget, path: str, body: bytes, stream: bool,
                   content_type: str | None = None) -> Any:
        self.bodies.append((path, body, content_type))
        return await super().post(target, path, body, stream, content_type)


def _call(method: str, path: str, **kw: Any) -> tuple[httpx.Response, Recording, FakeLedger]:
    table = RouteTable(zones=("z0",), models=("omni",), backend_ids=("s0/omni/c",), backend_site=("s0",),
                       model=np.zeros(1, np.int64), allowed=np.ones((1, 1), bool), rtt_ms=np.zeros((1, 1)))
    up, ledger = Recording(), FakeLedger()
    gw = fake_gateway(table, up, {KEY: Tenant("a", "A", "z0")}, ledger, limits={"max_upload_bytes": 4096})

    async def go() -> httpx.Response:
        app = create_app(gw, health_checks=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            return await c.request(method, path, headers={"authorization": f"Bearer {KEY}"}, **kw)

    return run(go()), up, ledger


def test_speech_is_charged_by_its_input_and_passes_the_audio_through() -> None:
    r, up, ledger = _call("POST", "/v1/audio/speech", json={"model": "omni", "voice": "v", "input": "abcdef" * 3})
    assert r.status_code == 200 and r.content.startswith(b"RIFF") and r.headers["content-type"] == "audio/wav"
    assert ledger.settled == [("a", 6, 0)]  # ceil(18 bytes / 3) input tokens, no completion tokens
    assert up.bodies[0][0] == "/audio/speech" and up.bodies[0][2] is None


def test_a_transcription_is_re_encoded_for_the_upstream_and_settled_on_its_usage() -> None:
    r, up, ledger = _call("POST", "/v1/audio/transcriptions", data={"model": "omni", "language": "fr"},
                          files={"file": ("a.wav", b"RIFF" + bytes(300), "audio/wav")})
    assert r.status_code == 200 and r.json()["text"] == "fake transcript"
    assert ledger.settled == [("a", 40, 3)]  # the upstream's input_tokens / output_tokens
    path, body, ctype = up.bodies[0]
    assert path == "/audio/transcriptions" and ctype is not None and ctype.startswith("multipart/form-data; boundary=")
    assert b'name="language"\r\n\r\nfr' in body and b'filename="a.wav"' in body and b"RIFF" + bytes(300) in body


def test_uploads_over_the_limit_and_missing_fields_are_refused_before_any_upstream_call() -> None:
    big, up, _ = _call("POST", "/v1/audio/transcriptions", data={"model": "omni"},
                       files={"file": ("a.wav", bytes(9000), "audio/wav")})
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large" and not up.bodies
    nofile, up, _ = _call("POST", "/v1/audio/transcriptions", data={"model": "omni"},
                          files={"other": ("a.wav", b"x", "audio/wav")})
    assert nofile.status_code == 400 and nofile.json()["error"]["param"] == "file" and not up.bodies
    novoice, up, _ = _call("POST", "/v1/audio/speech", json={"model": "omni", "input": "hi"})
    assert novoice.status_code == 400 and novoice.json()["error"]["param"] == "voice" and not up.bodies
