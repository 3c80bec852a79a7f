"""Upstream side: circuit breakers, health checks, both clients against the emulator, and failover inside the
compliant set."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from sovcloud.errors import UpstreamError
from sovcloud.gateway.app import create_app
from sovcloud.gateway.config import BreakerConfig, HealthConfig, TimeoutsConfig, UpstreamTarget
from sovcloud.gateway.emulator import Emulator, EmulatorOptions
from sovcloud.gateway.upstream import AiohttpUpstream, BackendHealth
from sovcloud.gateway.upstreamhttp import HttpUpstream
from sovcloud.metering.tenants import Tenant
from sovcloud.routing.router import RouteTable
from tests.gateway.test_emulator import BID, _backends
from tests.support.gateway import FakeUpstream, fake_gateway, run, serve_app

TABLE = RouteTable(zones=("z-eu", "z-us"), models=("m1",), backend_ids=("de/m1/c", "fr/m1/c", "us/m1/c"),
                   backend_site=("de", "fr", "us"), model=np.array([0, 0, 0]),
                   allowed=np.array([[True, True, False], [True, True, True]]),
                   rtt_ms=np.array([[5.0, 10.0, 1.0], [90.0, 90.0, 5.0]]))
EU = {"sk-sov-eu": Tenant("eu", "EU", "z-eu")}
BODY = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


class Clock:
    """A clock the test advances (no waiting for cooldowns)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_breaker_opens_after_consecutive_failures_then_half_opens_and_closes() -> None:
    healthy = np.ones(2, bool)
    clock = Clock()
    h = BackendHealth(healthy, HealthConfig(failures_to_down=2), BreakerConfig(failures=2, cooldown_s=0.05), clock)
    h.failure(0)
    assert healthy[0] and h.breaker_state(0, clock()) == "closed"
    h.failure(0)
    assert not healthy[0] and h.breaker_state(0, clock()) == "open"
    clock.advance(0.04)
    h.probed(0, True)  # still cooling down: a passing probe does not let traffic in
    assert not healthy[0] and h.breaker_state(0, clock()) == "open"
    clock.advance(0.02)
    assert h.breaker_state(0, clock()) == "half_open"
    h.probed(0, True)  # any re-evaluation after the cooldown lets traffic try it again
    assert healthy[0]
    h.failure(0)  # one failure while half-open reopens it
    assert not healthy[0]
    clock.advance(0.06)
    h.probed(0, True)
    h.success(0)
    assert healthy[0] and h.breaker_state(0, clock()) == "closed"
    h.probed(1, False)
    assert healthy[1]  # one failed probe is not enough (failures_to_down=2)
    h.probed(1, False)
    assert not healthy[1]
    h.probed(1, True)
    assert healthy[1]


def test_failover_stays_in_the_compliant_set_and_reports_attempts() -> None:
    upstream = FakeUpstream({"de/m1/c": "connect"})
    gw = fake_gateway(TABLE, upstream, EU)

    async def go() -> httpx.Response:
        app = create_app(gw, health_checks=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            return await c.post("/v1/chat/completions", json=BODY, headers={"Authorization": "Bearer sk-sov-eu"})
    r = run(go())
    assert r.status_code == 200 and r.headers["x-sovcloud-backend"] == "fr/m1/c"
    assert r.headers["x-sovcloud-attempts"] == "2" and upstream.calls == ["de/m1/c", "fr/m1/c"]
    assert gw.health.failures[0] == 1 and gw.parts.state.inflight.sum() == 0
    # every attempt budget spent while compliant backends remain: 502, never the US backend
    upstream = FakeUpstream({"de/m1/c": "500", "fr/m1/c": "500"})
    gw = fake_gateway(TABLE, upstream, EU, routing={"max_attempts": 1})
    r = run(go())
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error" and upstream.calls == ["de/m1/c"]


@pytest.mark.parametrize("client_type", [HttpUpstream, AiohttpUpstream])
def test_clients_against_the_emulator(client_type: type[HttpUpstream] | type[AiohttpUpstream]) -> None:
    emu = Emulator(_backends(), EmulatorOptions(fixed_ms=1, chunks=3, chunk_ms=1))
    with serve_app(emu.app()) as url:
        target = UpstreamTarget(backend_id=BID, url=f"{url}/{BID}/v1", api_key="k", model="m1")
        dead = UpstreamTarget(backend_id="x", url="http://127.0.0.1:9/v1", api_key=None, model="m1")

        async def go() -> None:
            client = client_type(TimeoutsConfig(connect_s=1))
            try:
                r = await client.post(target, "/chat/completions", b'{"model":"m1","messages":[]}', False)
                assert r.status == 200 and b"chat.completion" in await r.read()
                r = await client.post(target, "/completions", b'{"model":"m1","prompt":"x","stream":true}', True)
                body = b"".join([c async for c in r.chunks()])
                r.close()
                assert body.count(b"data: ") == 5 and body.endswith(b"data: [DONE]\n\n")
                r = await client.post(target, "/chat/completions", b"{not json", False)
                assert r.status == 400 and b"error" in await r.read()  # a 4xx is an answer, not a failure
                assert await client.probe(target, "models", 1.0)
                assert not await client.probe(dead, "models", 0.5)
                with pytest.raises(UpstreamError):
                    await client.post(dead, "/completions", b"{}", False)
                emu.set_mode("down", backends=[BID])
                assert not await client.probe(target, "models", 1.0)  # a 503 is a failed check
            finally:
                await client.close()
        run(go())
