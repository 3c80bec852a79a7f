"""The httptools upstream client against a scripted raw TCP server on 127.0.0.1 whose every byte the test chooses
(keep-alive, chunked, close-delimited, interim, broken and silent upstreams). Against the emulator, with probes:
``tests/test_upstream.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from sovcloud.errors import UpstreamError
from sovcloud.gateway.config import TimeoutsConfig, UpstreamTarget
from sovcloud.gateway.upstreamhttp import HttpUpstream
from tests.support.gateway import run

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


async def _request(reader: asyncio.StreamReader) -> bytes:
    """One request (head and Content-Length body) as bytes; b"" when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
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
async def _client(timeouts: TimeoutsConfig, **options: int) -> AsyncIterator[HttpUpstream]:
    """The client under test, closed at the end (its pooled connections with it)."""
    client = HttpUpstream(timeouts, **options)
    try:
        yield client
    finally:
        await client.close()


def _target(url: str, key: str | None = None) -> UpstreamTarget:
    return UpstreamTarget(backend_id="b", url=url, api_key=key, model="m")


async def _events(writer: asyncio.StreamWriter, events: list[bytes],
                  pause: Callable[[], Awaitable[object]] | None = None,
                  content_type: bytes = b"text/event-stream") -> bool:
    """Answer with a chunked SSE stream of ``events``, awaiting ``pause()`` after each one; keep the connection."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % content_type)
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
        assert {b"Authorization: Bearer sk-up", b"Content-Type: application/json", b"Content-Length: 7"} <= set(head)
        assert any(h.startswith(b"Host: 127.0.0.1:") for h in head)
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


def test_chunked_stream_arrives_event_by_event() -> None:
    gate = asyncio.Event()

    async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        return await _events(writer, [b"data: 1\n\n", b"data: 2\n\n"], gate.wait,
                             b"text/event-stream; charset=utf-8")

    async def go() -> None:
        async with scripted(sse) as (url, _, conns), _client(TimeoutsConfig(connect_s=1, idle_s=5)) as client:
            r = await client.post(_target(url), "/chat/completions", b"{}", True)
            assert r.status == 200 and r.content_type == "text/event-stream"
            it = r.chunks()
            assert await it.__anext__() == b"data: 1\n\n"  # before the server sent the second event
            gate.set()
            assert b"".join([c async for c in it]) == b"data: 2\n\n"
            r.close()  # after the end: a no-op, the connection stays pooled
            r = await client.post(_target(url), "/chat/completions", b"{}", True)
            assert b"".join([c async for c in r.chunks()]) == b"data: 1\n\ndata: 2\n\n"
            assert conns == [1, 1]
    run(go())


def test_a_reused_connection_the_upstream_closed_is_replaced_without_an_error() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        writer.write(OK.replace(b"Content-Length", b"Connection: keep-alive\r\nContent-Length"))
        await writer.drain()
        return False  # close right after answering, though the answer said keep-alive

    async def go() -> None:
        async with scripted(once) as (url, seen, conns), _client(TimeoutsConfig(connect_s=1)) as client:
            for _ in range(3):
                r = await client.post(_target(url), "/x", b"{}", False)
                assert await r.read() == b'{"ok":true}'
                await asyncio.sleep(0.02)
        assert len(seen) == 3 and conns == [1, 2, 3]
    run(go())


def test_a_pooled_connection_that_fails_on_write_is_replaced() -> None:
    class Closed:  # what uvloop does when the handle closed before connection_lost ran
        def write(self, data: bytes) -> None:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

        def is_closing(self) -> bool:
            return False

        def abort(self) -> None:
            pass

    async def go() -> None:
        async with scripted(_ok) as (url, _, conns), _client(TimeoutsConfig(connect_s=1)) as client:
            async def one() -> bytes:
                r = await client.post(_target(url), "/x", b"{}", False)
                return await r.read()
            await asyncio.gather(one(), one())  # two pooled connections
            pooled = client._idle[("http", "127.0.0.1", int(url.split(":")[2].split("/")[0]))]
            assert len(pooled) == 2
            real = []
            for conn in pooled:  # both broken: the retry must not take the second one
                real.append(conn.transport)
                conn.transport = Closed()  # type: ignore[assignment]
            assert await one() == b'{"ok":true}'
            for t in real:
                assert t is not None
                t.close()
        assert len(conns) == 3 and conns[2] not in conns[:2]
    run(go())


def test_interim_answers_are_skipped_for_the_final_one() -> None:
    async def hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nContent-Type: text/html\r\nLink: </x>\r\n\r\n")
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


def test_a_body_delimited_by_the_end_of_the_connection_is_complete() -> None:
    async def legacy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"old\":1}")
        await writer.drain()
        return False

    async def go() -> None:
        async with scripted(legacy) as (url, _, _c), _client(TimeoutsConfig(connect_s=1)) as client:
            r = await client.post(_target(url), "/x", b"{}", False)
            assert await r.read() == b'{"old":1}'
    run(go())


def _broken(answer: bytes, then_wait: float = 0.0) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(then_wait)
        return False
    return handler


@pytest.mark.parametrize(("answer", "wait", "what"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cut", 0.0, "closed"),  # cut short
    (b"NOT HTTP AT ALL\r\n\r\n", 0.0, "malformed"),
    (b"", 2.0, "no data"),  # silent: the first-byte timeout
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{", 2.0, "no data"),  # stalls mid-body
])
def test_broken_upstreams_raise_upstream_errors(answer: bytes, wait: float, what: str) -> None:
    async def go() -> None:
        async with (
            scripted(_broken(answer, wait)) as (url, _, _c),
            _client(TimeoutsConfig(connect_s=1, first_byte_s=0.2)) as client,
        ):
            with pytest.raises(UpstreamError, match=what):
                r = await client.post(_target(url), "/x", b"{}", False)
                await r.read()
            assert not client._busy and not any(client._idle.values())  # the broken connection is gone
    run(go())


def test_a_silent_stream_times_out_and_close_stops_a_pending_read() -> None:
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
            with pytest.raises(UpstreamError, match="no data"):
                async for c in r.chunks():
                    got.append(c)
            assert got == [b"data: 1\n\n"]
            r = await client.post(_target(url), "/x", b"{}", True)
            it = r.chunks()
            assert await it.__anext__() == b"data: 1\n\n"
            pending = asyncio.ensure_future(it.__anext__())
            await asyncio.sleep(0.05)
            r.close()  # the client went away: the read waiting on the upstream ends at once
            with pytest.raises(UpstreamError, match="closed by the gateway"):
                await asyncio.wait_for(pending, 0.5)
    run(go())


def test_a_slow_reader_pauses_the_upstream_instead_of_buffering_without_bound() -> None:
    event = b"data: " + b"x" * 4000 + b"\n\n"

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        return await _events(writer, [event] * 200)  # 800 kB

    async def go() -> None:
        async with (
            scripted(flood) as (url, _, _c),
            _client(TimeoutsConfig(connect_s=1, idle_s=5), max_buffer=64 * 1024) as client,
        ):
            r = await client.post(_target(url), "/x", b"{}", True)
            await asyncio.sleep(0.3)  # the upstream writes as fast as it may; nobody reads
            assert r._buffered < 64 * 1024 + 256 * 1024  # paused near the limit (plus socket buffers)
            total = sum([len(c) async for c in r.chunks()])
            assert total == 200 * (len(event) + 0)
    run(go())


def test_time_the_gateway_spends_not_reading_is_not_upstream_silence() -> None:
    async def steady(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        return await _events(writer, [b"data: %d\n\n" % i for i in range(8)], lambda: asyncio.sleep(0.3))

    async def go() -> None:
        async with scripted(steady) as (url, _, _c), _client(TimeoutsConfig(connect_s=1, idle_s=1)) as client:
            r = await client.post(_target(url), "/x", b"{}", True)
            got = []
            async for c in r.chunks():
                got.append(c)
                if len(got) == 1:
                    await asyncio.sleep(1.5)  # a slow client: longer than idle_s, yet the upstream kept talking
            assert b"".join(got) == b"".join(b"data: %d\n\n" % i for i in range(8))
            assert r._timer is None  # the watchdog is gone with the response
    run(go())
