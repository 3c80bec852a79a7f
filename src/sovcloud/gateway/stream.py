"""Streaming relay of the gateway: SSE events from the upstream to the client, counted and metered.

:class:`SseRelay` splits the upstream bytes into complete SSE events, counts the completion tokens they
carry (one per choice per event that carries output: exact for servers that stream one token per
event, the default of vLLM, SGLang and TGI), keeps the upstream's ``usage`` (the gateway always asks for
it with ``stream_options.include_usage``) and drops the usage-only event when the client did not ask for
it. :class:`StreamResponse` is the ASGI response that sends the events (and an SSE comment ``: keep-alive``
after every ``timeouts.keepalive_s`` without one, so proxies keep a slow stream open): before forwarding events that
bring the delivered tokens to ``n`` it awaits ``ledger.progress(reservation, n)`` (the ledger's crash
rule), it watches for the client going away (then it stops reading the upstream, which stops the
generation) and it always finishes through the gateway's ``finish`` callback, which settles on the
upstream's usage when the stream completed and on the delivered count otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from sovcloud.errors import LedgerError, UpstreamError
from sovcloud.gateway.upstream import UpstreamResponse

__all__ = ["KEEPALIVE", "SseRelay", "StreamResponse"]

#: the SSE comment sent on long gaps (clients ignore comment lines)
KEEPALIVE = b": keep-alive\n\n"


# a choice that carries output: a non-empty string in content / reasoning_content / text, or tool calls / audio
_TOKEN = re.compile(rb'"(?:content|reasoning_content|text)"\s*:\s*"(?!")|"(?:tool_calls|audio)"\s*:\s*[\[{]')
_USAGE = re.compile(rb'"usage"\s*:\s*\{')


class SseRelay:
    """Incremental SSE parser: ``feed(bytes) -> (bytes to forward, tokens in them)``.

    Events are scanned, not parsed: a token is a choice with non-empty output (see ``_TOKEN``; escaped
    quotes inside strings never match, so text that merely mentions "content" is not counted). Only an
    event carrying a ``usage`` object is parsed as JSON.
    """

    __slots__ = ("_buf", "done", "include_usage", "tokens", "usage")

    def __init__(self, include_usage: bool) -> None:
        self._buf = b""
        self.include_usage = include_usage
        self.usage: dict[str, Any] | None = None
        self.tokens = 0
        self.done = False

    def feed(self, chunk: bytes) -> tuple[bytes, int]:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self._buf = buf
            return b"", 0
        self._buf = buf[cut + 2:]
        block = buf[:cut + 2]
        tokens = len(_TOKEN.findall(block))
        if _USAGE.search(block) is not None:
            block = self._usage(block)
        if b"data: [DONE]" in block:
            self.done = True
        self.tokens += tokens
        return block, tokens

    def flush(self) -> bytes:
        """Whatever trailing bytes never formed a complete event (forwarded as they are)."""
        rest, self._buf = self._buf, b""
        return rest

    def _usage(self, block: bytes) -> bytes:
        """Keep the upstream's usage; drop usage-only events unless the client asked for them."""
        kept = []
        for event in block[:-2].split(b"\n\n"):
            obj = _data(event) if _USAGE.search(event) is not None else None
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                self.usage = obj["usage"]
                if not self.include_usage and not obj.get("choices"):
                    continue
            kept.append(event + b"\n\n")
        return b"".join(kept)


def _data(event: bytes) -> Any:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                return orjson.loads(line[5:].strip())
            except orjson.JSONDecodeError:
                return None
    return None


Progress = Callable[[int], Awaitable[None]]
Finish = Callable[[int, bool, str | None], Awaitable[None]]


def _error_event(message: str, code: str) -> bytes:
    err = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    return b"data: " + orjson.dumps(err) + b"\n\n"


class StreamResponse(Response):
    """An SSE response relaying ``upstream`` after ``first`` (the events read before answering)."""

    def __init__(self, headers: list[tuple[bytes, bytes]], upstream: UpstreamResponse, relay: SseRelay,
                 first: bytes, first_tokens: int, progress: Progress, finish: Finish,
                 keepalive_s: float = 15.0) -> None:
        self.status_code = 200
        self.raw_headers = headers
        self.background = None
        self._up, self._relay, self._first, self._first_tokens = upstream, relay, first, first_tokens
        self._progress, self._finish = progress, finish
        self._gone = False
        self._keepalive_s = keepalive_s

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._gone = True
                self._up.close()  # unblocks the pending upstream read and stops the generation
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        delivered, completed, error = 0, False, None
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(self._watch(receive))
        beat = _Beat(loop, send, self._keepalive_s)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            try:
                await self._progress(self._first_tokens)
                await beat.send({"type": "http.response.body", "body": self._first, "more_body": True})
                delivered = self._first_tokens
                async for chunk in self._up.chunks():
                    out, n = self._relay.feed(chunk)
                    if not out:
                        continue
                    if n:
                        await self._progress(delivered + n)
                    if self._gone:
                        break
                    if beat.task is not None:  # a keep-alive comment is going out: the event follows it
                        await beat.drain()
                    beat.sending = True
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                    beat.sending = False
                    beat.sent += 1
                    delivered += n
                completed = not self._gone
                tail = self._relay.flush()
            except UpstreamError as exc:
                error, tail = ("client_disconnected" if self._gone else "upstream_stream_error"), b""
                if not self._gone:
                    tail = _error_event(f"The upstream stream broke off ({exc}); you were charged only for the "
                                        "tokens delivered.", "upstream_error")
            except LedgerError as exc:
                error = "ledger_unavailable"
                tail = _error_event(f"Metering is unavailable ({exc}); the stream was stopped.", "ledger_unavailable")
            await beat.stop()
            if not self._gone:
                await send({"type": "http.response.body", "body": tail, "more_body": False})
            else:
                error = error or "client_disconnected"
        finally:
            await beat.stop()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self._up.close()
            await self._finish(delivered, completed, error)


class _Beat:
    """The keep-alive comments of one stream: a timer (no task until one is due) that sends an SSE comment when
    no event went out in the last ``every`` seconds. It never sends while the stream is sending (``sending``), and
    the stream waits for a comment in flight (``task``) before its next event, so the two never interleave."""

    __slots__ = ("_every", "_loop", "_seen", "_send", "_timer", "sending", "sent", "stopped", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Send, every: float) -> None:
        self._loop, self._send, self._every = loop, send, every
        self.sent, self._seen, self.stopped, self.sending = 0, -1, False, False  # events sent; as of the last tick
        self.task: asyncio.Task[None] | None = None
        self._timer = loop.call_later(every, self._tick)

    def _tick(self) -> None:
        if self.stopped:
            return
        if self.sent == self._seen and not self.sending and self.task is None:
            self.task = self._loop.create_task(self._comment())
        self._seen = self.sent
        self._timer = self._loop.call_later(self._every, self._tick)

    async def _comment(self) -> None:
        try:
            await self._send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
        finally:
            self.task = None

    async def drain(self) -> None:
        """Wait for the comment in flight, if any."""
        task = self.task
        if task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task

    async def send(self, message: Message) -> None:
        """Send one of the stream's own messages after any comment in flight."""
        await self.drain()
        self.sending = True
        try:
            await self._send(message)
        finally:
            self.sending = False
        self.sent += 1

    async def stop(self) -> None:
        """No more comments; a comment being sent is let finish (the stream's last message comes after it)."""
        self.stopped = True
        self._timer.cancel()
        await self.drain()
