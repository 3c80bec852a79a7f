"""Upstream client CPU per request: the gateway's aiohttp client, plain answers and streams.

A canned OpenAI-compatible upstream (a raw asyncio HTTP/1.1 server, keep-alive, answering at once with the
sizes the emulator sends: a chat completion, or a chunked stream of 20 events, a usage event and [DONE]) runs
in its own process, pinned to another CPU where there is one. This process drives the client
(:class:`sovcloud.gateway.upstream.AiohttpUpstream`, through the gateway's ``UpstreamClient`` seam) with
``--concurrency`` requests at a time under uvloop, in ``--rounds`` rounds, and prints this process's CPU µs per
request (median over the rounds) and requests per second.

    python benchmarks/upstream_client.py [--requests 20000] [--concurrency 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import orjson
import uvloop

from sovcloud.gateway.config import TimeoutsConfig, UpstreamTarget
from sovcloud.gateway.upstream import AiohttpUpstream, UpstreamClient

TOKENS = 20


def _answers() -> tuple[bytes, bytes]:
    body = orjson.dumps({"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "qwen3-8b",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * TOKENS},
                                      "finish_reason": "length"}],
                         "usage": {"prompt_tokens": 12, "completion_tokens": TOKENS, "total_tokens": 12 + TOKENS}})
    plain = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)) + body
    events = [b"data: " + orjson.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}) + b"\n\n" for _ in range(TOKENS)]
    events.append(b"data: " + orjson.dumps({"id": "x", "choices": [], "usage": {
        "prompt_tokens": 12, "completion_tokens": TOKENS, "total_tokens": 12 + TOKENS}}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    stream = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
              + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n")
    return plain, stream


class _Canned(asyncio.Protocol):
    """Answers every request on the connection at once (a stream when the body asks for one)."""

    def __init__(self, plain: bytes, stream: bytes) -> None:
        self._plain, self._stream, self._buf = plain, stream, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._t: Any = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            head_end = self._buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self._buf[:head_end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            end = head_end + 4 + length
            if len(self._buf) < end:
                return
            body, self._buf = self._buf[head_end + 4:end], self._buf[end:]
            self._t.write(self._stream if b'"stream":true' in body else self._plain)


def serve(port: int) -> None:
    plain, stream = _answers()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Canned(plain, stream), "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()
    uvloop.run(main())


async def _drive(client: UpstreamClient, target: UpstreamTarget, n: int, conc: int,
                 stream: bool) -> tuple[float, float]:
    body = orjson.dumps({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": TOKENS,
                         "stream": stream})
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            r = await client.post(target, "/chat/completions", body, stream)
            if stream:
                async for _ in r.chunks():
                    pass
                r.close()
            else:
                await r.read()
            if r.status != 200:
                raise RuntimeError(f"status {r.status}")

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return (time.process_time() - c0) / n * 1e6, n / (time.perf_counter() - t0)


async def _bench(port: int, a: argparse.Namespace) -> dict[tuple[str, bool], list[tuple[float, float]]]:
    target = UpstreamTarget(backend_id="b", url=f"http://127.0.0.1:{port}/v1", api_key="k", model="qwen3-8b")
    clients: dict[str, UpstreamClient] = {"aiohttp": AiohttpUpstream(TimeoutsConfig())}
    out: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    try:
        for stream in (False, True):
            for client in clients.values():  # warm-up: connections, caches
                await _drive(client, target, 2000, a.concurrency, stream)
            for _ in range(a.rounds):
                for name, client in clients.items():
                    n = a.requests // (4 if stream else 1)
                    out.setdefault((name, stream), []).append(await _drive(client, target, n, a.concurrency, stream))
    finally:
        for client in clients.values():
            await client.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20000, help="plain requests per round (streams: a quarter)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, client_cpus = ({cpus[0]}, set(cpus[1:])) if len(cpus) > 1 else (set(cpus), set(cpus))
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)],
                            preexec_fn=lambda: os.sched_setaffinity(0, server_cpus))
    try:
        os.sched_setaffinity(0, client_cpus)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        results = uvloop.run(_bench(port, a))
    finally:
        proc.terminate()
        proc.wait()
    print(f"upstream client, concurrency {a.concurrency}, {a.rounds} rounds "
          f"(server on CPU {sorted(server_cpus)}, clients on CPU {sorted(client_cpus)})")
    print("| client | mode | CPU µs per request (median) | rounds | req/s (median) |")
    print("|---|---|---|---|---|")
    for (name, stream), runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        rps = statistics.median(r[1] for r in runs)
        print(f"| {name} | {'stream (22 events)' if stream else 'plain'} | {cpu:.0f} | "
              f"{' / '.join(f'{r[0]:.0f}' for r in runs)} | {rps:,.0f} |")


if __name__ == "__main__":
    main()
