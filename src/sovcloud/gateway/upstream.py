"""Upstream side of the gateway: the HTTP client seam, health checks and circuit breakers.

* :class:`UpstreamClient` is the interface the gateway calls (``post`` a body, ``probe`` a URL); the
  production implementation is :class:`AiohttpUpstream` (one keep-alive pool for every backend: aiohttp's
  client holds up at high concurrency where httpx's pool collapses, see docs/gateway-server.md). Tests
  pass an in-process fake with the same methods.
* :class:`BackendHealth` owns ``LoadState.healthy`` (the router's view) and combines two signals per
  backend: the active health check (``GET {url}/models`` every ``interval_s``; ``failures_to_down``
  failures in a row mark it down, one success up) and a circuit breaker on real traffic (``failures``
  consecutive upstream failures open it for ``cooldown_s``; then it is half-open: ``half_open_trials``
  concurrent trial requests may try it, the others see it unavailable; a trial's failure reopens it, its
  success closes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import aiohttp
import numpy as np
from numpy.typing import NDArray

from sovcloud.errors import UpstreamError
from sovcloud.gateway.config import BreakerConfig, HealthConfig, TimeoutsConfig, UpstreamTarget

__all__ = ["AiohttpUpstream", "BackendHealth", "UpstreamClient", "UpstreamResponse"]


class UpstreamResponse(Protocol):
    status: int
    content_type: str

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class UpstreamClient(Protocol):
    async def post(self, target: UpstreamTarget, path: str, body: bytes, stream: bool,
                   content_type: str | None = None) -> UpstreamResponse: ...

    async def probe(self, target: UpstreamTarget, path: str, timeout_s: float) -> bool: ...

    async def close(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("_resp", "content_type", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.content_type = resp.content_type

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"reading the response: {exc!r}") from exc
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"stream broke off: {exc!r}") from exc

    def close(self) -> None:
        self._resp.close()


class AiohttpUpstream:
    """The production upstream client: one aiohttp session, keep-alive, no per-host connection cap."""

    def __init__(self, timeouts: TimeoutsConfig) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._t_plain = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect_s,
                                              sock_read=timeouts.first_byte_s)
        self._t_stream = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect_s,
                                               sock_read=max(timeouts.idle_s, 1.0))
        self._headers: dict[str, dict[str, str]] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            conn = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(connector=conn, auto_decompress=False,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    def _headers_for(self, target: UpstreamTarget) -> dict[str, str]:
        h = self._headers.get(target.backend_id)
        if h is None:
            h = {"Content-Type": "application/json", "User-Agent": "sovcloud-gateway"}
            if target.api_key:
                h["Authorization"] = f"Bearer {target.api_key}"
            self._headers[target.backend_id] = h
        return h

    async def post(self, target: UpstreamTarget, path: str, body: bytes, stream: bool,
                   content_type: str | None = None) -> UpstreamResponse:
        """POST ``body`` (JSON, or ``content_type`` such as a multipart upload) to ``target`` + ``path``."""
        session = self._open()
        headers = self._headers_for(target)
        if content_type is not None:
            headers = {**headers, "Content-Type": content_type}
        try:
            resp = await session.post(target.url + path, data=body, headers=headers,
                                      timeout=self._t_stream if stream else self._t_plain)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(f"{target.url}: {exc!r}") from exc
        return _AiohttpResponse(resp)

    async def probe(self, target: UpstreamTarget, path: str, timeout_s: float) -> bool:
        session = self._open()
        try:
            async with session.get(f"{target.url}/{path}", headers=self._headers_for(target),
                                   timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                await resp.read()
                return resp.status < 500
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class BackendHealth:
    """Health checks plus circuit breakers, written into the router's ``healthy`` array.

    A backend is healthy (the router may pick it) when its health check passes and its breaker is closed, or
    half-open with a trial slot free. :meth:`admit` is asked before a request goes to the backend it was
    routed to: closed says yes; open says no; half-open says yes to at most ``half_open_trials`` trials at a
    time and no to the others (the router then tries the next compliant backend, as for an open breaker).
    A trial's :meth:`success` closes the breaker, its :meth:`failure` reopens it; :meth:`abandon` frees the slot
    of a trial that ended without a verdict (the client went away). A slot whose trial reported nothing for
    ``cooldown_s`` is free again, so a lost trial cannot keep a backend out for good.

    ``clock`` gives the time in seconds that cooldowns, trials and probe intervals are measured on (monotonic;
    tests pass a clock they advance)."""

    def __init__(self, healthy: NDArray[np.bool_], health: HealthConfig, breaker: BreakerConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        n = len(healthy)
        self.healthy = healthy
        self._health, self._breaker, self._clock = health, breaker, clock
        self.probe_up = [True] * n
        self._probe_fails = [0] * n
        self.failures = [0] * n  # consecutive failures on real traffic
        self.open_until = [0.0] * n  # breaker open until this time of the clock (0: closed)
        self.trials: list[list[float]] = [[] for _ in range(n)]  # per backend: start times of half-open trials
        self._task: asyncio.Task[None] | None = None

    def _half_open(self, b: int, now: float) -> bool:
        return now >= self.open_until[b] and self.failures[b] >= self._breaker.failures

    def _trials_full(self, b: int, now: float) -> bool:
        """Whether every trial slot of half-open ``b`` is taken (slots held longer than the cooldown are freed)."""
        live = [t for t in self.trials[b] if now - t < self._breaker.cooldown_s]
        self.trials[b] = live
        return len(live) >= self._breaker.half_open_trials

    def _apply(self, b: int, now: float) -> None:
        self.healthy[b] = (self.probe_up[b] and now >= self.open_until[b]
                           and not (self._half_open(b, now) and self._trials_full(b, now)))

    def breaker_state(self, b: int, now: float) -> str:
        if now < self.open_until[b]:
            return "open"
        return "half_open" if self.failures[b] >= self._breaker.failures else "closed"

    def admit(self, b: int) -> bool:
        """Whether a request routed to ``b`` may go there now (half-open: it takes a trial slot if one is free)."""
        now = self._clock()
        if now < self.open_until[b]:
            return False
        if not self._half_open(b, now):
            return True
        admitted = not self._trials_full(b, now)
        if admitted:
            self.trials[b].append(now)
        self._apply(b, now)
        return admitted

    def success(self, b: int) -> None:
        if self.failures[b]:
            self.failures[b] = 0
            self.open_until[b] = 0.0
            self.trials[b].clear()
            self._apply(b, self._clock())

    def failure(self, b: int) -> None:
        self.failures[b] += 1
        if self.failures[b] >= self._breaker.failures:
            now = self._clock()
            self.open_until[b] = now + self._breaker.cooldown_s
            self.trials[b].clear()
            self._apply(b, now)

    def abandon(self, b: int) -> None:
        """A trial on ``b`` ended without a verdict: its slot is free for the next request."""
        if self.trials[b]:
            self.trials[b].pop(0)
            self._apply(b, self._clock())

    def probed(self, b: int, ok: bool) -> None:
        self._probe_fails[b] = 0 if ok else self._probe_fails[b] + 1
        self.probe_up[b] = ok or (self.probe_up[b] and self._probe_fails[b] < self._health.failures_to_down)
        self._apply(b, self._clock())

    async def check_all(self, client: UpstreamClient, targets: Sequence[UpstreamTarget]) -> None:
        results = await asyncio.gather(*(client.probe(t, self._health.path, self._health.timeout_s)
                                         for t in targets))
        for b, ok in enumerate(results):
            self.probed(b, ok)

    async def _loop(self, client: UpstreamClient, targets: Sequence[UpstreamTarget]) -> None:
        step = min(self._health.interval_s, self._breaker.cooldown_s / 2)
        next_probe = self._clock() + self._health.interval_s  # start-up has just probed every backend
        while True:
            now = self._clock()
            if now >= next_probe:
                next_probe = now + self._health.interval_s
                await self.check_all(client, targets)
            else:
                for b in range(len(self.healthy)):  # an expired breaker becomes half-open
                    self._apply(b, now)
            await asyncio.sleep(step)

    def start(self, client: UpstreamClient, targets: Sequence[UpstreamTarget]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(client, targets))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
