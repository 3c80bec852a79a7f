"""A lean HTTP/1.1 upstream client on httptools: the gateway's default way to reach its backends.

The gateway sends every request to one of a few known OpenAI-compatible origins, always a ``POST`` of a JSON
body that it has already built, and reads back either one JSON body or a stream of SSE events. aiohttp's
general-purpose client (cookies, redirects, proxies, tracing, multipart, a request and a response object of
many fields) spent 161 µs of CPU per plain request on this project's 2-core machine, this client 29 µs
(``benchmarks/upstream_client.py``, docs/benchmarks.md). It does only what the gateway needs, over
:mod:`asyncio` transports with `httptools <https://github.com/MagicStack/httptools>`_ (the llhttp parser
uvicorn serves with) for the response framing: status, headers, ``Content-Length``, chunked transfer
coding and keep-alive are llhttp's, not ours.

* **Pool**: per origin (scheme, host, port) a LIFO list of idle keep-alive connections, no cap (as the
  aiohttp client was configured); a connection idle longer than ``keepalive_s`` is closed when next met.
  A connection the upstream closed leaves the pool as it closes.
* **One request** = one ``write`` of head and body. A request that fails on a *reused* connection before
  any byte of the answer came back (the upstream closed it as it was taken) is sent once more on a new
  connection (an upstream that read the request and then closed without a word may so see it twice, as
  with any client that retries a stale keep-alive connection); any other failure is an
  :class:`~sovcloud.errors.UpstreamError`, which the gateway turns into a failover inside the compliant set.
* **Timeouts** as before: ``connect_s`` to connect; then at most ``first_byte_s`` (plain) or ``idle_s``
  (stream) of silence between two reads.
* **Back-pressure**: a stream's unread bytes above ``max_buffer`` pause reading from the upstream.
* TLS for ``https://`` origins with the system's default context.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from sovcloud.errors import UpstreamError
from sovcloud.gateway.config import TimeoutsConfig, UpstreamTarget

__all__ = ["HttpUpstream"]

_Key = tuple[str, str, int]


class _Origin:
    """One upstream base URL, parsed once: where to connect and the bytes every request to it starts with."""

    __slots__ = ("heads", "host", "key", "port", "prefix", "ssl", "tail")

    def __init__(self, target: UpstreamTarget, tls: ssl.SSLContext | None) -> None:
        u = urlsplit(target.url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise UpstreamError(f"{target.url}: not an http(s) URL")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl = tls if u.scheme == "https" else None
        self.key: _Key = (u.scheme, self.host, self.port)
        self.prefix = u.path.rstrip("/")
        netloc = u.netloc.rpartition("@")[2]
        auth = f"Authorization: Bearer {target.api_key}\r\n" if target.api_key else ""
        self.tail = (f"Host: {netloc}\r\nUser-Agent: sovcloud-gateway\r\n{auth}").encode("latin-1")
        self.heads: dict[tuple[str, str], bytes] = {}

    def head(self, method: str, path: str) -> bytes:
        h = self.heads.get((method, path))
        if h is None:
            target = (self.prefix + path).encode("latin-1")
            h = method.encode() + b" " + target + b" HTTP/1.1\r\n" + self.tail
            if method == "POST":  # the gateway only ever posts JSON
                h += b"Content-Type: application/json\r\n"
            self.heads[(method, path)] = h
        return h


class _Response:
    """The answer on one connection: status and content type once the head is in, then the body."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_error", "_seen", "_timeout", "_timer", "_waiter", "chunked",
                 "complete", "content_type", "got_bytes", "has_length", "status")

    def __init__(self, conn: _Connection, timeout: float) -> None:
        self._conn, self._timeout = conn, timeout
        self.status, self.content_type = 0, ""
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        # the silence watchdog: one timer per response, not one per read (a stream has one read per event)
        self._timer: asyncio.TimerHandle | None = None
        self._seen = 0.0  # loop time of the last news, or of the start of the current wait if later
        self.complete = self.chunked = self.has_length = self.got_bytes = False

    # ---- fed by the connection ----
    def _wake(self) -> None:
        self._seen = self._conn.loop.time()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n == b"content-type":
            self.content_type = value.partition(b";")[0].strip().decode("latin-1").lower()
        elif n == b"content-length":
            self.has_length = True
        elif n == b"transfer-encoding" and b"chunked" in value.lower():
            self.chunked = True

    def body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > self._conn.max_buffer:
            self._conn.pause()
        self._wake()

    def finish(self, error: UpstreamError | None) -> None:
        if self.complete or self._error is not None:
            return
        if error is None:
            self.complete = True
        else:
            self._error = error
        if self._timer is not None:
            self._timer.cancel()  # also lets go of this response at once, not after the timeout
            self._timer = None
        self._wake()

    # ---- read by the gateway ----
    async def wait(self) -> None:
        """Until something new (head, body, end or error) arrives, at most the timeout of silence."""
        if self._error is not None:
            raise self._error
        loop = self._conn.loop
        w = self._waiter = loop.create_future()
        self._seen = max(self._seen, loop.time())  # time spent not reading (a paused upstream) is not silence
        if self._timer is None:
            self._timer = loop.call_at(self._seen + self._timeout, self._watch)
        try:
            await w
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _watch(self) -> None:
        """The watchdog: fail the response after ``timeout`` of silence during a wait, else look again later."""
        self._timer = None
        w = self._waiter
        if w is None or w.done() or self.complete or self._error is not None:
            return  # nobody waiting: the next wait arms it again
        loop = self._conn.loop
        if loop.time() - self._seen < self._timeout:
            self._timer = loop.call_at(self._seen + self._timeout, self._watch)
            return
        self._error = UpstreamError(f"no data from the upstream for {self._timeout:g} s")
        self._conn.abort()
        w.set_result(None)

    async def read(self) -> bytes:
        while not self.complete:
            await self.wait()
        return b"".join(self._chunks)

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives. The response is its own iterator, not an async generator: a loop that
        breaks off early leaves no generator behind for the event loop to finalize."""
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self.complete:
                raise StopAsyncIteration
            await self.wait()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered <= self._conn.max_buffer // 2:
            self._conn.resume()
        return data

    def close(self) -> None:
        """Stop: a response not read to its end takes its connection down with it."""
        if not self.complete:
            self.finish(UpstreamError("closed by the gateway"))
            self._conn.abort()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an origin; one exchange at a time."""

    def __init__(self, pool: HttpUpstream, key: _Key) -> None:
        self.pool, self.key = pool, key
        self.loop = asyncio.get_running_loop()
        self.max_buffer = pool.max_buffer
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.response: _Response | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._paused = self._interim = False

    # ---- asyncio.Protocol ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        r = self.response
        if r is None:  # nothing was asked: a broken upstream
            self.abort()
            return
        r.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            r.finish(UpstreamError(f"malformed HTTP response from the upstream: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        """The upstream closed its side: out of the pool at once (the transport closes when this returns)."""
        self.closed = True
        self.pool.forget(self)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        r = self.response
        if r is not None:
            if r.status and not r.chunked and not r.has_length and exc is None:
                r.finish(None)  # a body delimited by the end of the connection
            else:
                r.finish(UpstreamError(f"the upstream closed the connection ({exc!r})" if exc else
                                       "the upstream closed the connection"))
            self.response = None

    # ---- httptools callbacks ----
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.header(name, value)

    def on_headers_complete(self) -> None:
        r = self.response
        if r is None:
            return
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (103 Early Hints, an unasked-for 100): the real one follows
            self._interim = True
            r.content_type, r.has_length, r.chunked = "", False, False
            return
        r.status = status
        r._wake()

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response.body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        r, self.response = self.response, None
        keep = self._parser.should_keep_alive()
        if r is not None:
            r.finish(None)
        if keep and not self.closed:
            self.resume()
            self.pool.release(self)
        else:
            self.abort()

    # ---- control ----
    def send(self, head: bytes, body: bytes, timeout: float) -> _Response:
        r = self.response = _Response(self, timeout)
        try:
            if self.transport is None:
                raise RuntimeError("not connected")
            self.transport.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        except (RuntimeError, OSError) as exc:  # closed under our feet (uvloop raises on a closed handle)
            r.finish(UpstreamError(f"the connection to the upstream was closed ({exc})"))
            self.abort()
        return r

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()


class HttpUpstream:
    """The gateway's upstream client (an :class:`~sovcloud.gateway.upstream.UpstreamClient`): keep-alive pools per
    origin."""

    def __init__(self, timeouts: TimeoutsConfig, keepalive_s: float = 30.0, max_buffer: int = 256 * 1024) -> None:
        self._connect_s = timeouts.connect_s
        self._plain_s, self._stream_s = timeouts.first_byte_s, max(timeouts.idle_s, 1.0)
        self.keepalive_s, self.max_buffer = keepalive_s, max_buffer
        self._origins: dict[tuple[str, str, str | None], _Origin] = {}
        self._idle: dict[_Key, list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._tls: ssl.SSLContext | None = None

    def _origin(self, target: UpstreamTarget) -> _Origin:
        key = (target.backend_id, target.url, target.api_key)
        o = self._origins.get(key)
        if o is None:
            if self._tls is None and target.url.startswith("https://"):
                self._tls = ssl.create_default_context()
            o = self._origins[key] = _Origin(target, self._tls)
        return o

    async def _connect(self, o: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self, o.key)
        try:
            async with asyncio.timeout(self._connect_s):
                await loop.create_connection(lambda: conn, o.host, o.port, ssl=o.ssl,
                                             server_hostname=o.host if o.ssl else None)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise UpstreamError(f"connecting to {o.host}:{o.port}: {exc!r}") from exc
        return conn

    def _take(self, o: _Origin) -> _Connection | None:
        idle = self._idle.get(o.key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            t = conn.transport
            if not conn.closed and t is not None and not t.is_closing() and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.abort()
        return None

    def release(self, conn: _Connection) -> None:
        """Back to the pool: its exchange is complete and the upstream keeps the connection open."""
        self._busy.discard(conn)
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)

    def forget(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def _exchange(self, o: _Origin, head: bytes, body: bytes, timeout: float) -> _Response:
        """Send one request and wait for the head of its answer (once more on a new connection when a reused
        one turns out to be closed before anything came back)."""
        fresh = False
        while True:
            conn = None if fresh else self._take(o)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(o)
            self._busy.add(conn)
            resp = conn.send(head, body, timeout)
            try:
                while not resp.status:
                    await resp.wait()
            except UpstreamError:
                if reused and not resp.got_bytes and conn.closed:
                    fresh = True  # the retry goes on a new connection, never another pooled one
                    continue
                resp.close()
                raise
            except BaseException:  # cancelled: the connection is in an unknown state
                resp.close()
                raise
            return resp

    async def post(self, target: UpstreamTarget, path: str, body: bytes, stream: bool) -> _Response:
        o = self._origin(target)
        return await self._exchange(o, o.head("POST", path), body, self._stream_s if stream else self._plain_s)

    async def probe(self, target: UpstreamTarget, path: str, timeout_s: float) -> bool:
        try:
            o = self._origin(target)
            async with asyncio.timeout(timeout_s):
                resp = await self._exchange(o, o.head("GET", "/" + path), b"", timeout_s)
                await resp.read()
        except (UpstreamError, TimeoutError):
            return False
        return resp.status < 500

    async def close(self) -> None:
        for conn in [*self._busy, *(c for idle in self._idle.values() for c in idle)]:
            conn.abort()
        self._busy.clear()
        self._idle.clear()
