"""Rate limits that tell the truth: the real wait in ``retry-after``, OpenAI's ``x-ratelimit-*`` headers, and a
non-retryable 400 for a request that can never fit the tenant's TPM. The limiter's clock is moved by hand."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from sovcloud.gateway.admission import duration
from sovcloud.gateway.app import create_app
from sovcloud.metering.tenants import Tenant
from sovcloud.routing.router import RouteTable
from tests.support.gateway import FakeUpstream, fake_gateway, run

TABLE = RouteTable(zones=("z-eu",), models=("m1",), backend_ids=("eu/m1/c",), backend_site=("eu",),
                   model=np.array([0]), allowed=np.array([[True]]), rtt_ms=np.array([[5.0]]))
TENANTS = {"sk-sov-rpm": Tenant("rpm", "RPM 2", "z-eu", rpm=2),
           "sk-sov-tpm": Tenant("tpm", "TPM 600", "z-eu", rpm=100, tpm=600),
           "sk-sov-free": Tenant("free", "No limits", "z-eu")}
RATE = ("x-ratelimit-limit-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chat(max_tokens: int, content: str = "hello") -> dict[str, Any]:
    """A chat body; its prompt estimate is 3 + 4 + ceil(len(content) / 3) tokens (9 for "hello")."""
    return {"model": "m1", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}


def session(steps: list[tuple[float, str, dict[str, Any]]], generated: int = 3) -> list[httpx.Response]:
    """Send each (clock time, key, body) in order to one gateway whose limiter reads the hand-moved clock; the
    upstream generates up to ``generated`` tokens and reports 5 prompt tokens (the rest goes back to the bucket)."""
    clock = Clock()

    async def go() -> list[httpx.Response]:
        gw = fake_gateway(TABLE, FakeUpstream(completion_tokens=generated), TENANTS, clock=clock)
        app = create_app(gw, health_checks=False)
        out = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            for at, key, body in steps:
                clock.now = 1000.0 + at
                out.append(await c.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}))
        return out
    responses: list[httpx.Response] = run(go())
    return responses


def test_rpm_retry_after_is_the_real_wait() -> None:
    body = chat(4)
    ok1, ok2, refused, early, on_time = session([(0, "sk-sov-rpm", body), (0, "sk-sov-rpm", body),
                                                 (0, "sk-sov-rpm", body), (29.999, "sk-sov-rpm", body),
                                                 (30, "sk-sov-rpm", body)])
    assert ok1.status_code == ok2.status_code == 200
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["retry-after"] == "30"  # RPM 2: one request every 30 s
    assert "requests per minute" in refused.json()["error"]["message"]
    assert early.status_code == 429 and early.headers["retry-after"] == "1"  # 1 ms left, rounded up
    assert on_time.status_code == 200


def test_tpm_retry_after_is_the_real_wait() -> None:
    # 9 + 491 reserved, 5 + 491 used: 104 of 600 tokens left; then 9 + 195 = 204 needs 100 more: 10 s at 10/s
    steps = [(0, "sk-sov-tpm", chat(491)), (0, "sk-sov-tpm", chat(195)), (9.999, "sk-sov-tpm", chat(195)),
             (10, "sk-sov-tpm", chat(195))]
    first, refused, early, on_time = session(steps, generated=10**6)
    assert first.status_code == 200 and refused.status_code == 429
    assert refused.headers["retry-after"] == "10" and "tokens per minute" in refused.json()["error"]["message"]
    assert early.status_code == 429 and on_time.status_code == 200


def test_ratelimit_headers_on_answers_and_refusals() -> None:
    ok, last, refused = session([(0, "sk-sov-rpm", chat(4)), (0, "sk-sov-rpm", chat(4)), (0, "sk-sov-rpm", chat(4))])
    assert ok.headers["x-ratelimit-limit-requests"] == "2" and ok.headers["x-ratelimit-remaining-requests"] == "1"
    assert ok.headers["x-ratelimit-reset-requests"] == "30s"
    assert "x-ratelimit-limit-tokens" not in ok.headers  # no TPM limit: no token headers
    assert last.status_code == 200 and last.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.status_code == 429 and refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "1m0s" and refused.headers["retry-after"] == "30"
    tpm, = session([(0, "sk-sov-tpm", chat(91))])
    assert [tpm.headers[h] for h in RATE] == ["100", "600", "99", "500", "600ms", "10s"]
    free, = session([(0, "sk-sov-free", chat(4))])
    assert free.status_code == 200 and not any(h in free.headers for h in RATE)
    stream, = session([(0, "sk-sov-tpm", {**chat(91), "stream": True})])
    assert stream.status_code == 200 and stream.headers["x-ratelimit-remaining-tokens"] == "500"


def test_a_request_that_can_never_fit_is_a_400_not_a_429() -> None:
    too_big, fits = session([(0, "sk-sov-tpm", chat(592)), (0, "sk-sov-tpm", chat(591))])  # 601 and 600 tokens
    assert too_big.status_code == 400 and "retry-after" not in too_big.headers
    err = too_big.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "request_too_large"
    assert err["param"] == "max_tokens" and "600" in err["message"] and "601" in err["message"]
    assert fits.status_code == 200  # the refusal took nothing from the bucket


def test_durations_are_written_as_openai_writes_them() -> None:
    cases = {0.0: "0s", 0.0004: "1ms", 0.6: "600ms", 1.0: "1s", 8.64: "8.64s", 59.9991: "1m0s", 60.0: "1m0s",
             360.0: "6m0s", 90.5: "1m30.5s", 3600.0: "1h0m0s", 3725.0: "1h2m5s"}
    assert {s: duration(s) for s in cases} == cases
