"""Gateway CPU per request, without the HTTP stack: where sovcloud's own time goes.

The real gateway of ``sovcloud serve`` (:func:`sovcloud.gateway.app.build_gateway`: tiny-a plan, SQLite ledger
in a temporary folder, a tenant with a 10^12-token grant, request log on) is called as an ASGI app inside one
event loop (uvloop), with ``--concurrency`` requests at a time; the upstream is an in-process answer of the
size the emulator sends (the gateway's transport seam), so what is measured is the gateway's own work:
authentication, validation, admission, routing, metering (journal, pools, the ledger's writer thread),
metrics, the request log and the response. Printed: process CPU µs per request (every thread, the writer's
included) and wall µs per request, for each ``--metering`` mode, plain and streamed, as the median of
``--repeats`` runs after a warm-up.

    python benchmarks/gateway_cpu.py [--requests 20000] [--concurrency 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import orjson
import uvloop

from sovcloud.gateway.app import build_gateway, create_app, quiet_gc
from sovcloud.gateway.config import GatewayConfig, UpstreamTarget
from sovcloud.gateway.emulator import write_fixed_plan
from sovcloud.gateway.metrics import AccessLog
from sovcloud.metering.ledger import Ledger
from sovcloud.metering.tenants import Tenant, TenantStore

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = str(ROOT / "tests" / "data" / "tiny_a.yaml")
BODY = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "Say something about sovereign clouds."}],
        "max_tokens": 20}
TOKENS = 20


class _Answer:
    """One canned upstream answer: a chat completion, or its stream of TOKENS events and a usage event."""

    def __init__(self, stream: bool, body: bytes, events: list[bytes]) -> None:
        self.status = 200
        self.content_type = "text/event-stream" if stream else "application/json"
        self._body, self._events = body, events

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        for e in self._events:
            yield e

    def close(self) -> None:
        pass


class CannedUpstream:
    """The UpstreamClient seam: answers at once, as the emulator would (same sizes, usage included)."""

    def __init__(self) -> None:
        usage = {"prompt_tokens": 13, "completion_tokens": TOKENS, "total_tokens": 13 + TOKENS}
        self.body = orjson.dumps({"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "qwen3-8b",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * TOKENS},
                                               "finish_reason": "length"}], "usage": usage})
        self.events = [b"data: " + orjson.dumps({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0,
                                                 "model": "qwen3-8b", "choices": [{"index": 0,
                                                                                   "delta": {"content": "tok "}}]})
                       + b"\n\n" for _ in range(TOKENS)]
        self.events.append(b"data: " + orjson.dumps({"id": "chatcmpl-x", "choices": [], "usage": usage})
                           + b"\n\ndata: [DONE]\n\n")

    async def post(self, target: UpstreamTarget, path: str, body: bytes, stream: bool) -> _Answer:
        await asyncio.sleep(0)
        return _Answer(stream, self.body, self.events if stream else [])

    async def probe(self, target: UpstreamTarget, path: str, timeout_s: float) -> bool:
        return True

    async def close(self) -> None:
        pass


async def _drive(app: Any, key: str, n: int, conc: int, stream: bool) -> int:
    body = orjson.dumps({**BODY, "stream": stream})
    headers = [(b"host", b"bench"), (b"authorization", f"Bearer {key}".encode()),
               (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    left = n
    failed = 0

    async def one() -> None:
        nonlocal failed
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        status = 0

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers,
                 "query_string": b"", "http_version": "1.1", "scheme": "http", "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 2), "root_path": ""}
        await app(scope, receive, send)
        if status != 200:
            failed += 1

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(conc)))
    return failed


async def _measure(work: Path, metering: str, a: argparse.Namespace) -> list[dict[str, Any]]:
    plan = write_fixed_plan(work / "plan.json", SCENARIO, [("de-fra", "h100-sxm", "qwen3-8b", 8, 1)])
    ledger = f"sqlite:///{work / f'ledger-{metering}.db'}"
    with TenantStore.open(ledger) as store:
        key = store.add(Tenant("bench", "bench", "z-de"))
    Ledger.open(ledger).grant("bench", 10**12, None)
    cfg = GatewayConfig.model_validate({"plan": str(plan), "ledger": ledger, "metering": {
        "mode": metering, "journal": str(work / f"journal-{metering}")},
        "upstreams": {"default_url": "http://canned/{backend}/v1"}})
    gw, start, stop = build_gateway(cfg, "bench:0")
    gw.parts.upstream = CannedUpstream()
    gw.parts.state.limit[:] = 1e9  # the canned upstream has no capacity limit
    log = open(work / "access.log", "ab")  # noqa: SIM115 - closed below
    gw.access = AccessLog(log)
    app = create_app(gw, start, stop, health_checks=False)
    rows = []
    lifespan_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    msgs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await msgs.put({"type": "lifespan.startup"})

    async def lreceive() -> dict[str, Any]:
        return await msgs.get()

    async def lsend(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set_result(None)
        elif message["type"].startswith("lifespan.startup.failed"):
            started.set_exception(RuntimeError(message.get("message")))
        elif message["type"].startswith("lifespan.shutdown"):
            lifespan_done.set_result(None)

    life = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}}, lreceive, lsend))
    await started
    try:
        quiet_gc()  # as `sovcloud serve` does after start-up
        for stream in [m == "stream" for m in a.modes.split(",")]:
            await _drive(app, key, a.warmup, a.concurrency, stream)
            cpu, wall = [], []
            failed = 0
            for _ in range(a.repeats):
                c0, w0 = time.process_time(), time.perf_counter()
                failed += await _drive(app, key, a.requests, a.concurrency, stream)
                await asyncio.sleep(0.05)  # let the write-behind commit what these requests charged
                cpu.append((time.process_time() - c0) / a.requests * 1e6)
                wall.append((time.perf_counter() - w0 - 0.05) / a.requests * 1e6)
            rows.append({"metering": metering, "mode": "stream" if stream else "plain",
                         "cpu_us_per_req": statistics.median(cpu), "wall_us_per_req": statistics.median(wall),
                         "cpu_runs": [round(x, 1) for x in cpu], "failed": failed})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        await msgs.put({"type": "lifespan.shutdown"})
        await lifespan_done
        await life
        log.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--metering", default="leased,strict")
    ap.add_argument("--modes", default="plain,stream")
    a = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.metering.split(","):
            rows += uvloop.run(_measure(Path(tmp), m, a))
    print()
    print(f"| metering | mode | CPU µs/req | wall µs/req | CPU µs/req by run | failed |   "
          f"(concurrency {a.concurrency}, {a.requests} requests x {a.repeats}, Python {sys.version.split()[0]})")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['metering']} | {r['mode']} | {r['cpu_us_per_req']:.0f} | {r['wall_us_per_req']:.0f} | "
              f"{' / '.join(f'{x:.0f}' for x in r['cpu_runs'])} | {r['failed']} |")


if __name__ == "__main__":
    main()
