"""The aiohttp upstream client against a scripted raw TCP server on 127.0.0.1 whose every byte the test chooses
(keep-alive, chunked, interim, broken, silent and slow-draining upstreams), and a large answer arriving in small
writes through the whole gateway. Against the emulator, with probes: ``tests/gateway/test_upstream.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest

from sovcloud.errors import UpstreamError
from sovcloud.gateway.app import create_app
from sovcloud.gateway.config import TimeoutsConfig, UpstreamTarget
from sovcloud.gateway.upstream import AiohttpUpstream, UpstreamClient
from tests.gateway.test_upstream import BODY, EU, TABLE
from tests.support.gateway import FakeUpstream, fake_gateway, run

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


async def _request(reader: asyncio.StreamReader) -> bytes:
    """One request (head and Content-Length body) as bytes; b"" when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + (await reader.readexactly(length) if length else b"")


@asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    """A raw HTTP server: ``handler`` answers each request and says whether to keep the connection open.
    Yields its base URL, the requests received and, per request, the number of the connection it came on."""
    seen: list[bytes] = []
    conns: list[int] = []
    count = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        me = count
        try:
            while req := await _request(reader):
                seen.append(req)
                conns.append(me)
                if not await handler(reader, writer, req):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the test ended while this answer was still waiting
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/base/v1", seen, conns
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def _client(timeouts: TimeoutsConfig) -> AsyncIterator[AiohttpUpstream]:
    """The client under test, closed at the end (its pooled connections with it)."""
    client = AiohttpUpstream(timeouts)
    try:
        yield client
    finally:
        await client.close()


def _target(url: str, key: str | None = None) -> UpstreamTarget:
    return UpstreamTarget(backend_id="b", url=url, api_key=key, model="m")


async def _events(writer: asyncio.StreamWriter, events: list[bytes],
                  pause: Callable[[], Awaitable[object]] | None = None) -> bool:
    """Answer with a chunked SSE stream of ``events``, awaiting ``pause()`` after each one; keep the connection."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    for ev in events:
        writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
        await writer.drain()
        if pause is not None:
            await pause()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


async def _ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
    writer.write(OK)
    await writer.drain()
    return True


def test_requests_reuse_one_keep_alive_connection_and_carry_head_body_and_key() -> None:
    async def go() -> None:
        async with scripted(_ok) as (url, seen, conns), _client(TimeoutsConfig(connect_s=1)) as client:
            for i in range(3):
                r = await client.post(_target(url, "sk-up"), "/chat/completions", b'{"n":%d}' % i, False)
                assert r.status == 200 and r.content_type == "application/json"
                assert await r.read() == b'{"ok":true}'
        assert conns == [1, 1, 1]  # keep-alive: one connection for all three
        head = seen[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        assert head[0] == b"POST /base/v1/chat/completions HTTP/1.1"
        assert {b"Authorization: Bearer sk-up", b"Content-Type: application/json", b"Content-Length: 7",
                b"User-Agent: sovcloud-gateway"} <= set(head)
        assert seen[2].endswith(b'{"n":2}')
    run(go())


def test_concurrent_requests_open_their_own_connections_and_pool_them() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        await asyncio.sleep(0.05)
        return await _ok(reader, writer, req)

    async def go() -> None:
        async with scripted(slow) as (url, _, conns), _client(TimeoutsConfig(connect_s=1)) as client:
            async def one() -> bytes:
                r = await client.post(_target(url), "/x", b"{}", False)
                return await r.read()
            assert await asyncio.gather(*(one() for _ in range(4))) == [b'{"ok":true}'] * 4
            assert len(set(conns)) == 4
            await asyncio.gather(*(one() for _ in range(4)))
            assert len(set(conns)) == 4  # the second wave reused the four pooled connections
    run(go())


def test_chunked_stream_arrives_event_by_event_and_the_connection_is_reused() -> None:
    gate = asyncio.Event()

    async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        return await _events(writer, [b"data: 1\n\n", b"data: 2\n\n"], gate.wait)

    async def go() -> None:
        async with scripted(sse) as (url, _, conns), _client(TimeoutsConfig(connect_s=1, idle_s=5)) as client:
            r = await client.post(_target(url), "/chat/completions", b"{}", True)
            assert r.status == 200 and r.content_type == "text/event-stream"
            it = r.chunks()
            assert await it.__anext__() == b"data: 1\n\n"  # before the server sent the second event
            gate.set()
            assert b"".join([c async for c in it]) == b"data: 2\n\n"
            r.close()
            r = await client.post(_target(url), "/chat/completions", b"{}", True)
            assert b"".join([c async for c in r.chunks()]) == b"data: 1\n\ndata: 2\n\n"
            r.close()
        assert len(conns) == 2
    run(go())


def test_a_pooled_connection_the_upstream_closed_is_replaced_without_an_error() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        writer.write(OK.replace(b"Content-Length", b"Connection: keep-alive\r\nContent-Length"))
        await writer.drain()
        return False  # close right after answering, though the answer said keep-alive

    async def go() -> None:
        async with scripted(once) as (url, seen, conns), _client(TimeoutsConfig(connect_s=1)) as client:
            for _ in range(3):
                r = await client.post(_target(url), "/x", b"{}", False)
                assert await r.read() == b'{"ok":true}'
                await asyncio.sleep(0.02)  # the close reaches the client before the next request
        assert len(seen) == 3 and conns == [1, 2, 3]
    run(go())


def test_interim_answers_are_skipped_for_the_final_one() -> None:
    async def hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        return await _ok(reader, writer, req)

    async def go() -> None:
        async with scripted(hints) as (url, _, conns), _client(TimeoutsConfig(connect_s=1)) as client:
            for _ in range(2):
                r = await client.post(_target(url), "/x", b"{}", False)
                assert (r.status, r.content_type) == (200, "application/json")
                assert await r.read() == b'{"ok":true}'
        assert conns == [1, 1]
    run(go())


def _broken(answer: bytes, then_wait: float = 0.0) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(then_wait)
        return False
    return handler


@pytest.mark.parametrize(("answer", "wait"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cut", 0.0),  # cut short
    (b"NOT HTTP AT ALL\r\n\r\n", 0.0),  # malformed
    (b"", 0.0),  # closed without a word
    (b"", 2.0),  # silent: the first-byte timeout
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{", 2.0),  # stalls mid-body
])
def test_broken_upstreams_raise_upstream_errors(answer: bytes, wait: float) -> None:
    async def go() -> None:
        async with (
            scripted(_broken(answer, wait)) as (url, _, _c),
            _client(TimeoutsConfig(connect_s=1, first_byte_s=0.2)) as client,
        ):
            with pytest.raises(UpstreamError):
                r = await client.post(_target(url), "/x", b"{}", False)
                await r.read()
            unreachable = UpstreamTarget(backend_id="x", url="http://127.0.0.1:9/v1", api_key=None, model="m")
            with pytest.raises(UpstreamError):
                await client.post(unreachable, "/x", b"{}", False)
    run(go())


def test_a_silent_stream_times_out() -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)
        return False

    async def go() -> None:
        async with scripted(drip) as (url, _, _c), _client(TimeoutsConfig(connect_s=1, idle_s=1)) as client:
            r = await client.post(_target(url), "/x", b"{}", True)
            got = []
            with pytest.raises(UpstreamError):
                async for c in r.chunks():
                    got.append(c)
            r.close()
            assert got == [b"data: 1\n\n"]
    run(go())


def test_a_slow_reader_holds_the_upstream_back_instead_of_buffering_without_bound() -> None:
    event = b"data: " + b"x" * 64 * 1024 + b"\n\n"
    n = 512  # 32 MiB: far more than the socket buffers and the client's read buffer hold together
    written: list[int] = []

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        async def count() -> None:
            written.append(1)
        return await _events(writer, [event] * n, count)

    async def go() -> None:
        async with scripted(flood) as (url, _, _c), _client(TimeoutsConfig(connect_s=1, idle_s=5)) as client:
            r = await client.post(_target(url), "/x", b"{}", True)
            await asyncio.sleep(0.3)  # the upstream writes as fast as it may; nobody reads
            assert len(written) < n // 2  # held back: the upstream could not hand over the whole stream
            total = sum([len(c) async for c in r.chunks()])
            r.close()
            assert total == n * len(event) and len(written) == n
    run(go())


def _large_answer(size: int) -> bytes:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    msg = {"index": 0, "message": {"role": "assistant", "content": "x" * size}, "finish_reason": "length"}
    return orjson.dumps({"id": "big", "object": "chat.completion", "choices": [msg], "usage": usage})


async def _large_answer_through_the_gateway(client: UpstreamClient) -> None:
    """A 4 MiB non-streamed answer written in 16 KiB pieces with short pauses reaches the gateway's client
    whole, on the first attempt, and no backend's breaker counts a failure."""
    body = _large_answer(4 * 1024 * 1024)

    async def pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        for at in range(0, len(body), 16 * 1024):
            writer.write(body[at:at + 16 * 1024])
            await writer.drain()
            await asyncio.sleep(0.001)
        return True

    gw = fake_gateway(TABLE, FakeUpstream(), EU)
    async with scripted(pieces) as (url, seen, _c):
        gw.parts.upstream = client
        gw.parts.targets = tuple(t.model_copy(update={"url": url}) for t in gw.parts.targets)
        app = create_app(gw, health_checks=False)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
                r = await c.post("/v1/chat/completions", json=BODY, headers={"Authorization": "Bearer sk-sov-eu"})
        finally:
            await client.close()
    assert r.status_code == 200 and r.content == body and r.headers["x-sovcloud-attempts"] == "1"
    assert len(seen) == 1 and gw.health.failures == [0, 0, 0] and gw.parts.state.healthy.all()


def test_a_large_answer_in_small_writes_arrives_whole_without_tripping_a_breaker() -> None:
    run(_large_answer_through_the_gateway(AiohttpUpstream(TimeoutsConfig(connect_s=1, first_byte_s=2))))
