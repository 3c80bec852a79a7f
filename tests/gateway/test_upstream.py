"""Upstream side: circuit breakers (half-open trials included), health checks, the aiohttp client against the
emulator, and failover inside the compliant set."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from sovcloud.errors import UpstreamError
from sovcloud.gateway.app import create_app
from sovcloud.gateway.config import BreakerConfig, HealthConfig, TimeoutsConfig, UpstreamTarget
from sovcloud.gateway.emulator import Emulator, EmulatorOptions
from sovcloud.gateway.upstream import AiohttpUpstream, BackendHealth
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


def test_the_client_against_the_emulator() -> None:
    emu = Emulator(_backends(), EmulatorOptions(fixed_ms=1, chunks=3, chunk_ms=1))
    with serve_app(emu.app()) as url:
        target = UpstreamTarget(backend_id=BID, url=f"{url}/{BID}/v1", api_key="k", model="m1")
        dead = UpstreamTarget(backend_id="x", url="http://127.0.0.1:9/v1", api_key=None, model="m1")

        async def go() -> None:
            client = AiohttpUpstream(TimeoutsConfig(connect_s=1))
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


def test_a_half_open_breaker_admits_only_its_trials_among_concurrent_requests() -> None:
    healthy = np.ones(2, bool)
    clock = Clock()
    h = BackendHealth(healthy, HealthConfig(), BreakerConfig(failures=2, cooldown_s=5.0), clock)
    upstream = FakeUpstream({"de/m1/c": "500"})
    targets = [UpstreamTarget(backend_id=b, url=f"http://fake/{b}", api_key=None, model="m1")
               for b in ("de/m1/c", "fr/m1/c")]
    h.failure(0)
    h.failure(0)
    clock.advance(5.0)  # the cooldown has elapsed: half-open
    h.probed(0, True)
    assert healthy[0] and h.breaker_state(0, clock()) == "half_open"

    async def request() -> str:
        b = 0 if healthy[0] and h.admit(0) else 1  # the router's view, then the breaker's word at dispatch
        await asyncio.sleep(0)  # every request decides before any trial answers
        resp = await upstream.post(targets[b], "/chat/completions", orjson.dumps(BODY), False)
        if resp.status >= 500:
            h.failure(b)
        else:
            h.success(b)
        return targets[b].backend_id

    async def thirty() -> list[str]:
        return await asyncio.gather(*(request() for _ in range(30)))

    served = run(thirty())
    assert upstream.calls.count("de/m1/c") == 1 and served.count("fr/m1/c") == 29
    assert not healthy[0] and h.breaker_state(0, clock()) == "open"  # the trial failed: open again
    clock.advance(5.0)
    h.probed(0, True)
    upstream.behaviour.clear()
    assert run(request()) == "de/m1/c" and h.breaker_state(0, clock()) == "closed"  # the trial succeeded
    assert all(h.admit(0) for _ in range(5))  # closed: no limit


def test_half_open_trials_sets_how_many_concurrent_trials_go_through() -> None:
    healthy = np.ones(1, bool)
    clock = Clock()
    h = BackendHealth(healthy, HealthConfig(), BreakerConfig(failures=1, cooldown_s=1.0, half_open_trials=3), clock)
    h.failure(0)
    assert not h.admit(0)  # open
    clock.advance(1.0)
    assert [h.admit(0) for _ in range(5)] == [True, True, True, False, False]
    assert not healthy[0]  # every trial slot taken: the router sees it unavailable
    h.abandon(0)  # a trial that ended without a verdict (the client went away) frees its slot
    assert healthy[0] and h.admit(0) and not h.admit(0)
    h.success(0)
    assert healthy[0] and h.breaker_state(0, clock()) == "closed"


class _HeldUpstream(FakeUpstream):
    """A fake whose answers from ``held`` backends wait for ``gate``: every request dispatches before any trial ends."""

    def __init__(self, behaviour: dict[str, str], held: str) -> None:
        super().__init__(behaviour)
        self.held, self.gate = held, asyncio.Event()

    async def post(self, target: UpstreamTarget, path: str, body: bytes, stream: bool,
                   content_type: str | None = None) -> Any:
        if target.backend_id == self.held:
            self.calls.append(target.backend_id)
            await self.gate.wait()
            self.calls.remove(target.backend_id)  # recorded above already; the parent records it again
        return await super().post(target, path, body, stream, content_type)


def test_through_the_gateway_a_half_open_backend_gets_one_trial_among_30_concurrent_requests() -> None:
    clock = Clock()
    upstream = _HeldUpstream({"de/m1/c": "500"}, held="de/m1/c")
    gw = fake_gateway(TABLE, upstream, EU, clock=clock, breaker={"failures": 2, "cooldown_s": 5.0})
    gw.health.failure(0)
    gw.health.failure(0)
    clock.advance(5.0)  # cooldown over: half-open, and the router sees it healthy
    gw.health.probed(0, True)
    assert gw.parts.state.healthy[0] and gw.health.breaker_state(0, clock()) == "half_open"

    async def go() -> list[httpx.Response]:
        app = create_app(gw, health_checks=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            sends = [asyncio.ensure_future(c.post("/v1/chat/completions", json=BODY,
                                                  headers={"Authorization": "Bearer sk-sov-eu"}))
                     for _ in range(30)]
            for _ in range(10_000):  # until every request has reached an upstream (held or not)
                if len(upstream.calls) >= 30:
                    break
                await asyncio.sleep(0)
            dispatched = list(upstream.calls)
            upstream.gate.set()
            done = await asyncio.gather(*sends)
            assert dispatched.count("de/m1/c") == 1 and dispatched.count("fr/m1/c") == 29, dispatched
            return done

    answers = run(go())
    assert all(r.status_code == 200 for r in answers)
    assert upstream.calls.count("de/m1/c") == 1  # the trial failed (500), it failed over, and nobody else tried
    assert gw.health.breaker_state(0, clock()) == "open"
