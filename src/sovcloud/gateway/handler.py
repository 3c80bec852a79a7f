"""The gateway: OpenAI-compatible endpoints in front of the plan's backends, residency as a hard guarantee.

One request (``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``; ``/v1/responses`` is
translated into a chat request by :mod:`sovcloud.gateway.responses` and takes the same path):

1. **auth** ``Authorization: Bearer sk-sov-...`` -> tenant (in memory,
   :class:`~sovcloud.metering.tenants.TenantStore`);
2. **body** at most ``limits.max_body_bytes`` (413), JSON object (400), fields checked (400,
   :mod:`sovcloud.gateway.api`), model known (404) and allowed for the tenant (403);
3. **rate limits** RPM/TPM (429 ``rate_limit_exceeded``, with ``retry-after`` the real wait; 400
   ``request_too_large`` for a request larger than the whole TPM); steps 1-3 are
   :class:`~sovcloud.gateway.admission.Admission`;
4. **routing** :func:`sovcloud.routing.router.route` over the tenant's origin zone (residency), the client
   zone (header ``x-sovcloud-client-zone``, else the origin) and the live load; none left -> 503 with
   ``code`` = the router's reason (residency / unhealthy / saturated / no_backend). Deferrable batch work
   (``x-sovcloud-priority: batch`` or ``service_tier: "flex"``) is decided against the spare slots only and
   waits for one in :mod:`sovcloud.gateway.deferral`'s line: interactive work has strict priority;
5. **reservation** of prompt + max_tokens in the ledger (402 ``insufficient_quota`` when it cannot be
   covered; 402 rather than OpenAI's 429 so SDK clients do not retry in vain);
6. **upstream** with failover: a connection error, a 5xx or a 429 marks the attempt failed (and feeds
   the backend's circuit breaker) and the router is asked again with the tried backends excluded, so a
   retry can only land inside the compliant set; ``routing.max_attempts`` tries in all (then 502);
7. **settlement** on the upstream's ``usage`` (non-streamed: before the body is sent; streamed: see
   :mod:`sovcloud.gateway.stream`). An upstream 4xx is passed through and the reservation released.

Every refusal is an :class:`~sovcloud.errors.ApiError`, turned into its HTTP answer in one place
(``Gateway._refuse``: release, refund, metrics, OpenAI error body). Every routed response carries
``x-sovcloud-region`` (site), ``x-sovcloud-backend``, ``x-sovcloud-policy`` (origin zone, residency rule,
decision) and ``x-sovcloud-request-id``, and for a tenant with limits OpenAI's ``x-ratelimit-*`` headers; a
streamed one also ``cache-control: no-cache`` and ``x-accel-buffering: no`` (no proxy holds events back). The
rate limiter reads the clock the gateway is given (``time.monotonic``; tests move one by hand). The app is built
by :func:`sovcloud.gateway.app.create_app`; this module holds the request logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from sovcloud.errors import ApiError, InsufficientFunds, LedgerError, UpstreamError
from sovcloud.gateway.admission import Admission, Call
from sovcloud.gateway.answers import ascii_bytes, raw_response, retrieve
from sovcloud.gateway.api import ParsedRequest, api_error_body, error_body, parse_body
from sovcloud.gateway.config import GatewayConfig
from sovcloud.gateway.deferral import PRIORITY_HEADER, DeferredLine, deferrable
from sovcloud.gateway.metrics import AccessLog, GatewayMetrics
from sovcloud.gateway.parts import GatewayParts
from sovcloud.gateway.responses import Echo, ResponseEvents, ResponsesRequests, ResponsesStream, plain_response
from sovcloud.gateway.stream import SseRelay, StreamResponse
from sovcloud.gateway.upstream import BackendHealth, UpstreamResponse
from sovcloud.gateway.usage import count_tokens, plain_usage
from sovcloud.metering.book import Reservation
from sovcloud.metering.tenants import RateLimiter, Tenant
from sovcloud.routing.router import Decision, LoadState, route

__all__ = ["Gateway", "Validator"]

JSON = b"application/json"
_WANTED = frozenset({b"authorization", b"content-length", b"x-sovcloud-client-zone", PRIORITY_HEADER})
_SSE = ((b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))
Validator = Callable[[dict[str, Any]], ParsedRequest]


class Gateway:
    """The request logic over :class:`GatewayParts` (no global state: several may live in one process)."""

    def __init__(self, parts: GatewayParts, cfg: GatewayConfig, log: logging.Logger | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.parts, self.cfg = parts, cfg
        t = parts.table
        self.metrics = GatewayMetrics(t.backend_ids, parts.state)
        self.health = BackendHealth(parts.state.healthy, cfg.health, cfg.breaker, clock)
        self.limiter = RateLimiter(clock)
        self.admission = Admission(parts, cfg.limits, self.limiter)
        self.line = DeferredLine(clock)
        self._clock = clock
        self.log = log or logging.getLogger("sovcloud.gateway")
        self.access = AccessLog()
        self._backend_headers = [[(b"x-sovcloud-region", ascii_bytes(s)), (b"x-sovcloud-backend", ascii_bytes(b))]
                                 for s, b in zip(t.backend_site, t.backend_ids, strict=True)]
        self._exclude_zero = np.zeros(len(t.backend_ids), dtype=bool)
        self._broke: dict[str, float] = {}  # tenant -> until when it reserves before going upstream

    # ---- the endpoints --------------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: the models the tenant may use, each with the regions its data may go to."""
        t0 = time.perf_counter()
        try:
            tenant = self.admission.authenticate(request.headers.get("authorization"))
        except ApiError as exc:
            return await self._refuse(exc, None, "models", t0)
        data = self.admission.models_for(tenant)
        self.metrics.request("models", 200, time.perf_counter() - t0, False)
        return raw_response(200, [(b"content-type", JSON)], orjson.dumps({"object": "list", "data": data}))

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{model}``: OpenAI's model object, if the tenant may use the model (else 404)."""
        t0 = time.perf_counter()
        try:
            tenant = self.admission.authenticate(request.headers.get("authorization"))
            card = self.admission.model_for(tenant, request.path_params["model"])
        except ApiError as exc:
            return await self._refuse(exc, None, "models", t0)
        self.metrics.request("models", 200, time.perf_counter() - t0, False)
        return raw_response(200, [(b"content-type", JSON)], orjson.dumps(card))

    async def generate(self, scope: Scope, receive: Receive, endpoint: str, path: str, validate: Validator) -> Response:
        """Answer one generating request (chat, completions, embeddings) straight from its ASGI scope."""
        t0 = time.perf_counter()
        call: Call | None = None
        try:
            headers = {k: v for k, v in scope["headers"] if k in _WANTED}
            auth = headers.get(b"authorization")
            tenant = self.admission.authenticate(auth.decode("latin-1") if auth is not None else None)
            req = validate(parse_body(await self.admission.read_body(receive, headers.get(b"content-length"))))
            call = self.admission.admit(headers, tenant, req, endpoint, t0)
            call.deferred = deferrable(headers.get(PRIORITY_HEADER), req.body.get("service_tier"))
            return await self._serve(call, path)
        except ApiError as exc:
            return await self._refuse(exc, call, endpoint, t0)
        except Exception:  # a bug: answer in OpenAI's format, release the reservation, keep serving
            return await self._failed(call, endpoint, t0)

    async def batch_line(self, tenant: Tenant, body: dict[str, Any], endpoint: str, path: str,
                         validate: Validator) -> Response:
        """One line of a batch (:mod:`sovcloud.gateway.batches`): the request path of ``tenant`` as deferred work."""
        try:
            req = validate(body)
        except ApiError as exc:
            return await self._refuse(exc, None, endpoint, time.perf_counter())
        return await self.run_parsed({}, tenant, req, endpoint, path, deferred=True)

    async def run_parsed(self, headers: dict[bytes, bytes], tenant: Tenant, req: ParsedRequest, endpoint: str,
                         path: str, *, deferred: bool = False) -> Response:
        """Admit, route, reserve and forward a request already authenticated and checked (audio, batch lines)."""
        t0 = time.perf_counter()
        call: Call | None = None
        try:
            call = self.admission.admit(headers, tenant, req, endpoint, t0)
            call.deferred = deferred or deferrable(headers.get(PRIORITY_HEADER), req.body.get("service_tier"))
            return await self._serve(call, path)
        except ApiError as exc:
            return await self._refuse(exc, call, endpoint, t0)
        except Exception:
            return await self._failed(call, endpoint, t0)

    async def refuse(self, exc: ApiError, endpoint: str) -> Response:
        """The answer to a request refused before admission (its body could not be read or checked)."""
        return await self._refuse(exc, None, endpoint, time.perf_counter())

    async def _serve(self, call: Call, path: str) -> Response:
        """Route, reserve and forward an admitted call. Deferred work reserves first, then waits for its slot:
        nothing is awaited between its routing decision and its entry into the backend's count, so two deferred
        requests are never both given the same spare slot."""
        if call.deferred:
            call.pending = self._reserve(call)
            await self._reserved(call)
        d = await self._route(call)
        if d.backend < 0:
            raise self.admission.no_route(call, d.reason)
        if not call.deferred:
            reserve = self._reserve(call)
            if self.cfg.overlap_reservation and self._broke.get(call.tenant.id, 0.0) <= time.monotonic():
                call.pending = asyncio.ensure_future(reserve)  # commits while the upstream works
            else:
                call.pending = reserve
                await self._reserved(call)
        self.metrics.overhead(time.perf_counter() - call.t0)
        return await self._forward(call, d.backend, path)

    async def _failed(self, call: Call | None, endpoint: str, t0: float) -> Response:
        """A bug: answer in OpenAI's format, release the reservation, keep serving."""
        self.log.exception("internal error", extra={"fields": {"request_id": call.rid if call else None}})
        err = ApiError(500, "The gateway failed on this request; it was not charged.", type_="server_error",
                       code="internal_error")
        return await self._refuse(err, call, endpoint, t0)

    async def responses(self, scope: Scope, receive: Receive, requests: ResponsesRequests) -> Response:
        """``POST /v1/responses``: the chat completions path (admission, routing, reservation, failover,
        settlement, all as for the equivalent chat request) with the body translated into a chat request and
        the answer translated back into a Response object or Responses events (:mod:`sovcloud.gateway.responses`).
        Refusals are answered as they are."""
        asked: list[Echo] = []

        def validate(body: dict[str, Any]) -> ParsedRequest:
            parsed, echo = requests.check(body)
            asked.append(echo)
            return parsed

        answer = await self.generate(scope, receive, "responses", "/chat/completions", validate)
        if not asked or answer.status_code != 200:
            return answer
        rid = next((v.decode() for k, v in answer.raw_headers if k == b"x-sovcloud-request-id"), "")
        if isinstance(answer, StreamResponse):
            return ResponsesStream(answer, ResponseEvents(asked[0], rid, int(time.time())))
        headers = [(k, v) for k, v in answer.raw_headers if k != b"content-length"]
        return raw_response(200, headers, plain_response(bytes(answer.body), asked[0], rid))

    def _state(self, call: Call) -> LoadState:
        """The state a call is decided against: the full limits, or for deferred work only the spare slots."""
        return self.parts.state.for_batch() if call.deferred else self.parts.state

    async def _route(self, call: Call) -> Decision:
        """The router's decision; deferred work with no spare slot waits in the line (strict priority)."""
        t = self.parts.table
        d = route(t, self._state(call), call.origin, call.client, call.model)
        if not call.deferred:
            return d
        deadline = self._clock() + self.cfg.routing.batch_wait_s
        while d.backend < 0 and d.reason == "saturated":
            await self.line.wait(deadline)
            d = route(t, self._state(call), call.origin, call.client, call.model)
        return d

    def _enter(self, call: Call, b: int) -> None:
        st = self.parts.state
        st.inflight[b] += 1
        if call.deferred and st.batch_inflight is not None:
            st.batch_inflight[b] += 1

    def _leave(self, call: Call, b: int) -> None:
        """A request left backend ``b``: its slot is free again, so the longest-waiting deferred request tries."""
        st = self.parts.state
        st.inflight[b] -= 1
        if call.deferred and st.batch_inflight is not None:
            st.batch_inflight[b] -= 1
        if len(self.line):
            self.line.wake()

    async def _reserve(self, call: Call) -> Reservation:
        """Reserve the worst case; for a stream, also start making the first progress block durable, so the
        first token does not wait for a commit (the upstream is still prefilling). A gateway that dies before
        the first token then charges at most one block (the ledger's bound: delivered <= charge <= delivered + B)."""
        req = call.req
        res = await self.parts.ledger.reserve(call.tenant, call.rid, req.model, req.prompt_tokens, req.max_tokens)
        if req.stream and req.max_tokens > 0 and self.parts.ledger.premark:
            asyncio.ensure_future(self.parts.ledger.progress(res, 1)).add_done_callback(retrieve)
        return res

    async def _reserved(self, call: Call) -> None:
        """Wait for the reservation started at admission; a refusal becomes the 402 (or 503) to answer.

        Called before anything reaches the client (and before a settlement), so with ``overlap_reservation``
        the upstream works while the ledger commits, yet nothing is delivered that is not reserved."""
        task, call.pending = call.pending, None
        if task is None:
            return
        try:
            call.reservation = await task
        except InsufficientFunds as exc:
            self._broke[call.tenant.id] = time.monotonic() + 2.0  # no speculative upstream work for a while
            raise ApiError(402, f"Insufficient quota for tenant '{call.tenant.id}': {exc}. Add a grant or credit "
                                "(`sovcloud tenants grant|credit`) or lower max_tokens.",
                           type_="insufficient_quota", code="insufficient_quota") from None
        except LedgerError as exc:
            raise ApiError(503, f"Metering is unavailable ({exc}); retry later.", type_="service_unavailable",
                           code="ledger_unavailable") from None

    async def _refuse(self, exc: ApiError, call: Call | None, endpoint: str, t0: float) -> Response:
        """The HTTP answer of a refusal (the one place an :class:`ApiError` becomes one): its status, headers
        and OpenAI error body, after releasing the call's reservation and refunding its rate-limit count."""
        if call is not None and call.pending is not None:
            with contextlib.suppress(ApiError):  # a reservation still on its way: wait for it, to release it
                await self._reserved(call)
        if call is not None and call.reservation is not None:
            await self._release(call)
        if call is not None:  # admitted: give back what the rate limiter counted
            self.limiter.refund(call.tenant, call.req.prompt_tokens + call.req.max_tokens)
        reason = exc.code or exc.type
        self.metrics.rejected(reason)
        self.metrics.request(endpoint, exc.status, time.perf_counter() - t0, False)
        rid = call.rid if call is not None else self.admission.request_id()
        headers = {"x-sovcloud-request-id": rid, **exc.headers}
        if self.cfg.log_requests:
            self.access.write("refused", {"request_id": rid, "endpoint": endpoint, "status": exc.status,
                                          "code": reason, "tenant": call.tenant.id if call else None})
        return Response(api_error_body(exc), exc.status, headers=headers, media_type="application/json")

    async def _release(self, call: Call) -> None:
        if call.reservation is None:
            return
        try:
            await self.parts.ledger.release(call.reservation)
        except LedgerError as exc:  # stays pending: recovery releases it (nothing was delivered)
            self.log.error("release failed", extra={"fields": {"request_id": call.rid, "error": str(exc)}})
        call.reservation = None

    def _payload(self, call: Call, b: int) -> tuple[bytes, str | None]:
        """The body for backend ``b`` (its model name) and its content type (None: JSON)."""
        up_model = self.parts.targets[b].model
        if call.req.upload is not None:
            return call.req.upload.encode(up_model)
        body = call.req.body
        if up_model != body["model"]:
            body = {**body, "model": up_model}
        if call.req.stream:
            body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
        return orjson.dumps(body), None

    async def _attempt(self, call: Call, b: int, path: str) -> tuple[UpstreamResponse | None, str]:
        """POST to backend ``b``; (response, "") on a usable answer, (None, failure kind) on a failover one."""
        target = self.parts.targets[b]
        payload, content_type = self._payload(call, b)
        try:
            resp = await (self.parts.upstream.post(target, path, payload, call.req.stream) if content_type is None
                          else self.parts.upstream.post(target, path, payload, call.req.stream, content_type))
        except UpstreamError:
            return None, "connect"
        if resp.status >= 500 or resp.status == 429:
            resp.close()
            return None, f"status_{resp.status}"
        return resp, ""

    async def _forward(self, call: Call, b: int, path: str) -> Response:
        table = self.parts.table
        exclude: NDArray[np.bool_] | None = None
        while True:
            if not self.health.admit(b):  # half-open and its trial slots taken: another compliant backend
                exclude = self._exclude_zero.copy() if exclude is None else exclude
                exclude[b] = True
                d = route(table, self._state(call), call.origin, call.client, call.model, exclude=exclude)
                if d.backend < 0:
                    raise self.admission.no_route(call, d.reason)
                b = d.backend
                continue
            call.attempts += 1
            call.backend = b
            self._enter(call, b)
            sent = time.perf_counter()
            try:
                resp, failed = await self._attempt(call, b, path)
            except asyncio.CancelledError:
                self.health.abandon(b)  # the client left before the backend gave a verdict
                self._leave(call, b)
                raise
            if resp is not None:
                if resp.status >= 400:
                    self._leave(call, b)
                    return await self._pass_error(call, resp)
                answer = await (self._stream(call, resp, sent) if call.req.stream else self._plain(call, resp, sent))
                if answer is not None:
                    return answer
                failed = "read"
            else:
                self._leave(call, b)
            self.health.failure(b)
            self.metrics.upstream_failure(table.backend_ids[b], failed)
            if exclude is None:
                exclude = self._exclude_zero.copy()
            exclude[b] = True
            d = route(table, self._state(call), call.origin, call.client, call.model, exclude=exclude)
            if d.backend < 0:
                raise self.admission.no_route(call, d.reason)
            if call.attempts >= self.cfg.routing.max_attempts:
                raise ApiError(502, f"The upstream failed {call.attempts} times (last: {table.backend_ids[b]}, "
                                    f"{failed}); retry later.", type_="server_error", code="upstream_error")
            b = d.backend

    def _headers(self, call: Call, content_type: bytes) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", content_type), (b"x-sovcloud-request-id", call.rid.encode()),
                *self._backend_headers[call.backend],
                (b"x-sovcloud-policy", ascii_bytes(self.admission.policy[call.origin] + "ok")),
                (b"x-sovcloud-attempts", str(call.attempts).encode()), *call.rate]

    def _observe_ttft(self, b: int, seconds: float) -> None:
        a = self.cfg.routing.ttft_ewma
        ttft = self.parts.state.ttft_s
        ttft[b] = (1.0 - a) * ttft[b] + a * max(seconds, 0.0)

    async def _pass_error(self, call: Call, resp: UpstreamResponse) -> Response:
        try:
            data = await resp.read()
        except UpstreamError:
            data = b""
        await self._reserved(call)
        await self._release(call)
        self.health.success(call.backend)  # it answered: a client error is not the backend's fault
        try:
            ok = isinstance(orjson.loads(data).get("error"), dict)
        except (orjson.JSONDecodeError, AttributeError):
            ok = False
        if not ok:
            data = error_body(f"The upstream refused the request: {data[:300].decode('utf-8', 'replace')}",
                              "invalid_request_error", None, "upstream_rejected")
        call.status = resp.status
        self._done(call, False)
        return raw_response(resp.status, self._headers(call, JSON), data)

    async def _plain(self, call: Call, resp: UpstreamResponse, sent: float) -> Response | None:
        b = call.backend
        try:
            data = await resp.read()
        except UpstreamError:
            return None
        finally:
            self._leave(call, b)
        elapsed = time.perf_counter() - sent
        call.prompt, call.completion = plain_usage(call.endpoint, data, call.req.prompt_tokens, call.req.max_tokens)
        self.health.success(b)
        self._observe_ttft(b, elapsed - call.completion * float(self.parts.tpot_s[b]))
        await self._reserved(call)
        if call.reservation is not None:
            try:
                await self.parts.ledger.settle(call.reservation, call.prompt, call.completion)
            except LedgerError as exc:  # not charged -> not delivered (recovery releases it)
                raise ApiError(503, f"Metering is unavailable ({exc}); the response was withheld and not "
                                    "charged. Retry later.", type_="service_unavailable",
                               code="ledger_unavailable") from None
        call.status = 200
        self._done(call, True)
        kind = JSON if call.endpoint not in ("speech", "transcriptions") \
            else (resp.content_type or "application/octet-stream").encode()
        return raw_response(200, self._headers(call, kind), data)

    async def _stream(self, call: Call, resp: UpstreamResponse, sent: float) -> Response | None:
        relay = SseRelay(call.req.include_usage)
        first, n = b"", 0
        try:
            async for chunk in resp.chunks():  # read up to the first events, so failover is still possible
                first, n = relay.feed(chunk)
                if first:
                    break
        except UpstreamError:
            first = b""
        except BaseException:  # the client left (cancelled) before the first event: the slot is free again
            resp.close()
            self._leave(call, call.backend)
            raise
        if not first:
            resp.close()
            self._leave(call, call.backend)
            return None
        ttft = time.perf_counter() - sent
        self._observe_ttft(call.backend, ttft)
        self.metrics.ttft(self.parts.table.backend_site[call.backend], ttft)
        self.health.success(call.backend)
        try:
            await self._reserved(call)
        except BaseException:  # refused by the ledger, or the client left meanwhile
            resp.close()
            self._leave(call, call.backend)
            raise
        reservation = call.reservation

        async def progress(tokens: int) -> None:
            if reservation is not None and tokens > 0:
                await self.parts.ledger.progress(reservation, tokens)

        async def finish(delivered: int, completed: bool, error: str | None) -> None:
            self._leave(call, call.backend)
            u = relay.usage or {}
            call.prompt = count_tokens(u.get("prompt_tokens"), call.req.prompt_tokens)
            call.completion = count_tokens(u.get("completion_tokens"), delivered) if completed else delivered
            call.completion = min(call.completion, call.req.max_tokens) if not completed else call.completion
            call.status, call.error = 200, error
            if reservation is not None:
                try:
                    await self.parts.ledger.settle(reservation, call.prompt, call.completion)
                except LedgerError as exc:  # stays pending: recovery charges it at the durable progress mark
                    self.log.error("settle failed", extra={"fields": {"request_id": call.rid, "error": str(exc)}})
            self._done(call, True)

        return StreamResponse([*self._headers(call, b"text/event-stream"), *_SSE], resp, relay, first, n, progress,
                              finish, self.cfg.timeouts.keepalive_s)

    def _done(self, call: Call, metered: bool) -> None:
        seconds = time.perf_counter() - call.t0
        t = self.parts.table
        region, backend = t.backend_site[call.backend], t.backend_ids[call.backend]
        self.metrics.request(call.endpoint, call.status, seconds, call.req.stream)
        self.metrics.routed(region, backend)
        if metered:
            self.metrics.tokens(call.req.model, call.prompt, call.completion)
            unused = call.req.prompt_tokens + call.req.max_tokens - call.prompt - call.completion
            self.limiter.refund(call.tenant, unused)
        if self.cfg.log_requests:
            self.access.write("request", {
                "request_id": call.rid, "tenant": call.tenant.id, "endpoint": call.endpoint,
                "model": call.req.model, "status": call.status, "region": region, "backend": backend,
                "origin": t.zones[call.origin], "client_zone": t.zones[call.client], "attempts": call.attempts,
                "stream": call.req.stream, "prompt_tokens": call.prompt, "completion_tokens": call.completion,
                "ms": round(seconds * 1000, 3), "error": call.error})
