"""Strict priority at the gateway: deferred batch work takes spare slots only; interactive work never waits for it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np

from sovcloud.gateway.app import create_app
from sovcloud.gateway.handler import Gateway
from sovcloud.gateway.upstream import UpstreamTarget
from sovcloud.metering.tenants import Tenant
from sovcloud.routing.router import RouteTable
from tests.support.gateway import FakeUpstream, fake_gateway, run

KEY = "sk-sov-t"
TENANT = {KEY: Tenant("t", "T", "z0")}


def _table() -> RouteTable:
    return RouteTable(zones=("z0",), models=("m",), backend_ids=("s0/m/c",), backend_site=("s0",),
                      model=np.zeros(1, np.int64), allowed=np.ones((1, 1), bool), rtt_ms=np.zeros((1, 1)))


class HeldUpstream(FakeUpstream):
    """Answers only when the test lets it; records the priority of each request it received, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.seen: list[str] = []

    async def post(self, target: UpstreamTarget, path: str, body: bytes, stream: bool,
                   content_type: str | None = None) -> Any:
        self.seen.append("batch" if b'"flex"' in body or b"batch-" in body else "chat")
        await self.go.wait()
        return await super().post(target, path, body, stream, content_type)


def _gateway(upstream: FakeUpstream, slots: float = 4.0, **cfg: Any) -> Gateway:
    gw = fake_gateway(_table(), upstream, TENANT, **cfg)
    st = gw.parts.state
    st.slots[:], st.limit[:] = slots, 2 * slots
    st.batch_inflight, st.headroom, st.batch_fill = np.zeros(1), np.zeros(1), 1.0
    return gw


def _body(text: str, flex: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    if flex:
        body["service_tier"] = "flex"
    return body


async def _until(cond: Any) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def test_interactive_requests_overtake_batch_work_at_saturation() -> None:
    up = HeldUpstream()
    gw = _gateway(up)

    async def go() -> list[int]:
        app = create_app(gw, health_checks=False)
        auth = {"authorization": f"Bearer {KEY}"}
        batch = {**auth, "x-sovcloud-priority": "batch"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            tasks = [asyncio.ensure_future(c.post("/v1/chat/completions", json=_body(f"batch-{i}"), headers=batch))
                     for i in range(4)]  # the four slots
            await _until(lambda: len(up.seen) == 4)
            tasks += [asyncio.ensure_future(c.post("/v1/chat/completions", json=_body(f"b{i}", flex=True),
                                                   headers=auth)) for i in range(2)]  # no spare slot: they wait
            await _until(lambda: len(gw.line) == 2)
            tasks += [asyncio.ensure_future(c.post("/v1/chat/completions", json=_body(f"chat-{i}"), headers=auth))
                      for i in range(2)]
            await _until(lambda: len(up.seen) == 6)
            assert up.seen == ["batch"] * 4 + ["chat"] * 2  # interactive went ahead of the waiting batch
            assert len(gw.line) == 2 and gw.parts.state.batch_inflight is not None
            assert float(gw.parts.state.batch_inflight[0]) == 4.0
            up.go.set()
            answers = await asyncio.gather(*tasks)
        return [a.status_code for a in answers]

    assert run(go()) == [200] * 8
    st = gw.parts.state
    assert float(st.inflight[0]) == 0.0 and st.batch_inflight is not None and float(st.batch_inflight[0]) == 0.0
    assert len(gw.line) == 0


def test_batch_work_that_finds_no_spare_slot_in_time_is_refused_uncharged() -> None:
    up = HeldUpstream()
    gw = _gateway(up, slots=1.0, routing={"batch_wait_s": 0.05})

    async def go() -> tuple[int, dict[str, Any], int]:
        app = create_app(gw, health_checks=False)
        headers = {"authorization": f"Bearer {KEY}", "x-sovcloud-priority": "batch"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            first = asyncio.ensure_future(c.post("/v1/chat/completions", json=_body("batch-0"), headers=headers))
            await _until(lambda: len(up.seen) == 1)
            late = await c.post("/v1/chat/completions", json=_body("batch-1"), headers=headers)
            up.go.set()
            return late.status_code, late.json(), (await first).status_code

    status, body, first = run(go())
    assert status == 503 and body["error"]["code"] == "batch_deferred_timeout" and first == 200
    assert len(up.seen) == 1  # the refused request never reached a backend


def test_an_unknown_priority_is_a_400_naming_the_header() -> None:
    gw = _gateway(FakeUpstream())

    async def go() -> httpx.Response:
        app = create_app(gw, health_checks=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            return await c.post("/v1/chat/completions", json=_body("x"),
                                headers={"authorization": f"Bearer {KEY}", "x-sovcloud-priority": "urgent"})

    r = run(go())
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_priority"
    assert "x-sovcloud-priority" in r.json()["error"]["message"]


def test_a_waiter_that_leaves_does_not_swallow_the_wake_up() -> None:
    from sovcloud.gateway.deferral import DeferredLine

    async def go() -> bool:
        line = DeferredLine()
        deadline = line._clock() + 5.0
        a = asyncio.ensure_future(line.wait(deadline))
        b = asyncio.ensure_future(line.wait(deadline))
        await asyncio.sleep(0)
        a.cancel()  # its client left
        line.wake()
        await asyncio.wait_for(b, timeout=1.0)
        return b.done() and not b.cancelled() and len(line) == 0

    assert run(go())


def test_a_woken_waiter_that_leaves_hands_its_wake_up_on_and_a_wake_wakes_only_a_few(monkeypatch: Any) -> None:
    from sovcloud.gateway import deferral
    from sovcloud.gateway.deferral import WAKE_PER_LEAVE, DeferredLine

    async def go() -> tuple[bool, int, bool]:
        line = DeferredLine()
        deadline = line._clock() + 5.0
        a = asyncio.ensure_future(line.wait(deadline))
        b = asyncio.ensure_future(line.wait(deadline))
        await asyncio.sleep(0)
        line.wake(1)  # a is woken ...
        a.cancel()  # ... and its client leaves: either a still takes the wake-up (and routes) or b gets it
        for _ in range(5):
            await asyncio.sleep(0)
        not_lost = (a.done() and not a.cancelled()) or b.done()
        b.cancel()
        many = [asyncio.ensure_future(line.wait(deadline)) for _ in range(10)]
        await asyncio.sleep(0)
        line.wake()
        for _ in range(10):
            await asyncio.sleep(0)
        woken = sum(f.done() for f in many)
        monkeypatch.setattr(deferral, "RECHECK_S", 0.01)
        lone = asyncio.ensure_future(line.wait(deadline))
        await asyncio.wait_for(lone, timeout=1.0)  # no wake-up at all: it routes again after RECHECK_S
        for f in many:
            f.cancel()
        return not_lost, woken, lone.done()

    handed_on, woken, rechecked = run(go())
    assert handed_on and woken == WAKE_PER_LEAVE and rechecked
