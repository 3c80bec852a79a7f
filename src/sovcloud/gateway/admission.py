"""Admission of a request: who asks (API key), how much (body size), for what (model) and from where (zones).

:class:`Admission` checks, in this order, what the gateway knows before it routes: the ``Authorization``
header names a tenant (401; 503 when the tenant store is unreachable), the body is within
``limits.max_body_bytes`` (413, as soon as it is known), the model is served (404) and allowed for the tenant
(403), the tenant's data-origin zone and the ``x-sovcloud-client-zone`` header are zones of the scenario (403,
400), the request can fit the tenant's TPM at all (400 ``request_too_large``, not retryable) and the tenant is
within its RPM/TPM limits (429 with ``retry-after``: the whole seconds until the request fits). For a tenant with
limits, refusals and answers carry OpenAI's ``x-ratelimit-*`` headers (limit, remaining and reset, per requests
and tokens; a reset is a duration such as ``600ms``, ``8.64s`` or ``6m0s``). An admitted request becomes a
:class:`Call`, which carries it through routing, reservation and the upstream. It also writes the 503 of a call
the router found no backend for, and lists the models a tenant may use (one, or all).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.types import Receive

from sovcloud.errors import ApiError, LedgerError
from sovcloud.gateway.api import ParsedRequest
from sovcloud.gateway.config import LimitsConfig
from sovcloud.gateway.parts import GatewayParts
from sovcloud.metering.book import Reservation
from sovcloud.metering.tenants import RateLimiter, RateState, Tenant

__all__ = ["Admission", "Call", "duration", "rate_headers"]

Headers = tuple[tuple[bytes, bytes], ...]


def duration(seconds: float) -> str:
    """A wait as OpenAI writes it in ``x-ratelimit-reset-*`` (Go's duration format, to the millisecond, rounded
    up): ``0s``, ``600ms``, ``8.64s``, ``6m0s``, ``1h2m5s``."""
    ms = math.ceil(seconds * 1000.0 - 1e-6)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    hours, minutes = divmod(minutes, 60)
    secs = f"{ms // 1000}.{ms % 1000:03d}".rstrip("0").rstrip(".") + "s"
    return f"{hours}h{minutes}m{secs}" if hours else f"{minutes}m{secs}" if minutes else secs


def rate_headers(state: RateState) -> Headers:
    """OpenAI's ``x-ratelimit-*`` headers of a tenant's buckets (only for the limits the tenant has)."""
    out: list[tuple[bytes, bytes]] = []
    if state.rpm is not None:
        out += [(b"x-ratelimit-limit-requests", str(state.rpm).encode()),
                (b"x-ratelimit-remaining-requests", str(state.requests_left).encode()),
                (b"x-ratelimit-reset-requests", duration(state.requests_reset_s).encode())]
    if state.tpm is not None:
        out += [(b"x-ratelimit-limit-tokens", str(state.tpm).encode()),
                (b"x-ratelimit-remaining-tokens", str(state.tokens_left).encode()),
                (b"x-ratelimit-reset-tokens", duration(state.tokens_reset_s).encode())]
    return tuple(out)


@dataclass(slots=True)
class Call:
    """One admitted request: who, what, where, and its reservation."""

    rid: str
    tenant: Tenant
    req: ParsedRequest
    endpoint: str
    origin: int
    client: int
    model: int
    t0: float
    reservation: Reservation | None = None
    pending: Awaitable[Reservation] | None = None  # the reservation, until the gateway awaits it
    backend: int = -1
    attempts: int = 0
    status: int = 0
    completion: int = 0
    prompt: int = 0
    error: str | None = None
    rate: Headers = ()  # the x-ratelimit-* headers of the answer (none for a tenant without limits)
    deferred: bool = False  # batch work: decided against spare slots only, waits for one (gateway.deferral)


class Admission:
    """The checks before routing, over one gateway's parts (the limiter is the gateway's, refunds included)."""

    def __init__(self, parts: GatewayParts, limits: LimitsConfig, limiter: RateLimiter) -> None:
        self.parts, self.limits, self.limiter = parts, limits, limiter
        t = parts.table
        self.zone = {z: i for i, z in enumerate(t.zones)}
        self.model = {m: i for i, m in enumerate(t.models)}
        self.served = frozenset(t.models[int(m)] for m in np.unique(t.model)) if len(t.model) else frozenset()
        # x-sovcloud-policy per origin zone, completed by the decision
        self.policy = [f"origin={z}; rule={r or 'default'}; decision=" for z, r in
                       zip(t.zones, parts.residency_rule, strict=True)]
        self._rid_prefix = secrets.token_hex(5)  # request ids: random per start + a counter (no syscall per request)
        self._rid_count = itertools.count(1)

    def request_id(self) -> str:
        return f"{self._rid_prefix}{next(self._rid_count):07x}"

    def authenticate(self, auth: str | None) -> Tenant:
        """The tenant of an ``Authorization: Bearer <key>`` header value (401 if missing or unknown)."""
        if not auth:
            raise ApiError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer sk-sov-...'.",
                           code="invalid_api_key")
        scheme, _, key = auth.partition(" ")
        try:
            tenant = self.parts.tenants.authenticate(key.strip()) if scheme.lower() == "bearer" else None
        except LedgerError as exc:  # a key not in the cache and the tenant database unreachable
            raise ApiError(503, f"The tenant store is unavailable ({exc}); retry later.", type_="service_unavailable",
                           code="ledger_unavailable") from None
        if tenant is None:
            raise ApiError(401, "Incorrect API key provided. Keys are issued by `sovcloud tenants add`.",
                           code="invalid_api_key")
        return tenant

    async def read_body(self, receive: Receive, length: bytes | None) -> bytes:
        """The request body, refused with 413 as soon as it is known to exceed the limit, and with 408 when it
        has not arrived whole within ``limits.body_timeout_s``."""
        limit = self.limits.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(413, f"The request body is {int(length):,} bytes; the limit is {limit:,} bytes.",
                           code="body_too_large")
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                return await self._receive_body(receive, limit)
        except TimeoutError:
            raise ApiError(408, f"The request body did not arrive whole within {self.limits.body_timeout_s:g} s; "
                                "send the whole body (and a Content-Length that matches it).",
                           code="request_timeout") from None

    @staticmethod
    async def _receive_body(receive: Receive, limit: int) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ApiError(400, "The client went away before sending the whole body.", code="client_disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"The request body exceeds the limit of {limit:,} bytes.", code="body_too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def admit(self, headers: dict[bytes, bytes], tenant: Tenant, req: ParsedRequest, endpoint: str,
              t0: float) -> Call:
        """The call of a valid request: model served (404) and allowed (403), zones known (403, 400), within
        the tenant's TPM at all (400) and within its rate limits (429)."""
        m = self.model.get(req.model)
        if m is None or req.model not in self.served:
            raise ApiError(404, f"The model '{req.model}' does not exist or is not served here; "
                                f"GET /v1/models lists the models you can use.", param="model",
                           code="model_not_found")
        if not tenant.allows(req.model):
            raise ApiError(403, f"Your tenant '{tenant.id}' may not use the model '{req.model}'; "
                                "ask the operator to allow it (`sovcloud tenants`).", param="model",
                           code="model_not_allowed")
        origin = self.zone.get(tenant.origin_zone)
        if origin is None:
            raise ApiError(403, f"Your tenant's data-origin zone '{tenant.origin_zone}' is not a zone of this "
                                "gateway's scenario, so its residency cannot be enforced; ask the operator to "
                                "fix the tenant.", type_="permission_error", code="unknown_origin_zone")
        raw_cz = headers.get(b"x-sovcloud-client-zone")
        cz = raw_cz.decode("latin-1") if raw_cz is not None else None
        client = origin if not cz else self.zone.get(cz)
        if client is None:
            raise ApiError(400, f"Invalid 'x-sovcloud-client-zone' header: '{cz[:40] if cz else ''}' is not a zone "
                                "of this gateway's scenario; leave it out to use your data-origin zone.",
                           param="x-sovcloud-client-zone", code="unknown_zone")
        state = self.limiter.check(tenant, req.prompt_tokens + req.max_tokens)
        if state is None:
            return Call(self.request_id(), tenant, req, endpoint, origin, client, m, t0)
        rate = rate_headers(state)
        if state.refused is not None:
            raise _rate_refusal(tenant, req, state, rate)
        return Call(self.request_id(), tenant, req, endpoint, origin, client, m, t0, rate=rate)

    def no_route(self, call: Call, reason: str) -> ApiError:
        """The 503 for a call the router found no backend for, saying why (``reason``) and where it may go."""
        t = self.parts.table
        sites = sorted({t.backend_site[b] for b in np.flatnonzero(t.compliant(call.origin, call.model))})
        where = ", ".join(sites) or "none"
        origin = t.zones[call.origin]
        rule = self.parts.residency_rule[call.origin] or "default"
        model = call.req.model
        text = {
            "residency": f"The model '{model}' is not served at any site where data of origin '{origin}' may be "
                         f"processed (residency rule '{rule}'); ask the operator to deploy it there.",
            "unhealthy": f"Every backend of '{model}' where data of origin '{origin}' may be processed "
                         f"(rule '{rule}': {where}) is down or failed; retry later. The request was not sent "
                         "anywhere else.",
            "saturated": f"Every compliant backend of '{model}' for data of origin '{origin}' ({where}) is at "
                         "its in-flight limit; retry with backoff.",
        }.get(reason, f"The model '{model}' has no backend in this plan.")
        return ApiError(503, text, type_="service_unavailable", code=reason,
                        headers={"x-sovcloud-policy": self.policy[call.origin] + reason})

    def models_for(self, tenant: Tenant) -> list[dict[str, Any]]:
        """The models ``tenant`` may use, each with the sites its data may go to (``GET /v1/models``)."""
        return [self._card(tenant, m) for m in sorted(self.served) if tenant.allows(m)]

    def model_for(self, tenant: Tenant, model: str) -> dict[str, Any]:
        """OpenAI's model object of ``model`` (``GET /v1/models/{model}``); 404 when it is not served or not
        allowed for ``tenant`` (as OpenAI answers for a model one has no access to)."""
        if model not in self.served or not tenant.allows(model):
            raise ApiError(404, f"The model '{model[:200]}' does not exist or you do not have access to it; "
                                "GET /v1/models lists the models you can use.", param="model",
                           code="model_not_found")
        return self._card(tenant, model)

    def _card(self, tenant: Tenant, model: str) -> dict[str, Any]:
        t, origin = self.parts.table, self.zone.get(tenant.origin_zone)
        regions = [] if origin is None else sorted(
            {t.backend_site[b] for b in np.flatnonzero(t.compliant(origin, self.model[model]))})
        return {"id": model, "object": "model", "created": 0, "owned_by": "sovcloud", "sovcloud_regions": regions}


def _rate_refusal(tenant: Tenant, req: ParsedRequest, state: RateState, rate: Headers) -> ApiError:
    """The 400 of a request larger than the tenant's whole TPM, or the 429 (with the real wait) of one that
    must wait for its buckets; both with the ``x-ratelimit-*`` headers."""
    headers = {k.decode(): v.decode() for k, v in rate}
    size = req.prompt_tokens + req.max_tokens
    if state.refused == "size":
        return ApiError(400, f"This request needs {size:,} tokens (about {req.prompt_tokens:,} prompt + "
                            f"{req.max_tokens:,} max_tokens), more than the limit of {state.tpm:,} tokens per minute "
                            f"of tenant '{tenant.id}', so it can never be admitted; lower max_tokens or shorten the "
                            "prompt.", param="max_tokens", code="request_too_large", headers=headers)
    what = "requests per minute" if state.refused == "rpm" else \
        f"tokens per minute (this request counts {size:,}: prompt + max_tokens; lower max_tokens to fit sooner)"
    return ApiError(429, f"Rate limit reached for {what} of tenant '{tenant.id}'; it fits in "
                         f"{state.retry_after_s} s (retry-after).", type_="requests",
                    code="rate_limit_exceeded", headers={"retry-after": str(state.retry_after_s), **headers})
