"""The gateway's request side in process: every malformed input gets the right 4xx with a clear message."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from sovcloud.errors import ApiError, InsufficientFunds
from sovcloud.gateway.api import IMAGE_TOKENS, RequestValidator, parse_body
from sovcloud.gateway.app import create_app
from sovcloud.gateway.schema import REF, OpenApi30
from sovcloud.gateway.stream import SseRelay
from sovcloud.metering.book import Reservation
from sovcloud.metering.tenants import Tenant
from sovcloud.routing.router import RouteTable
from tests.support.gateway import FakeLedger, FakeUpstream, fake_gateway, run

TABLE = RouteTable(zones=("z-eu", "z-us"), models=("m1", "m2", "m3"), backend_ids=("eu/m1/c", "us/m1/c", "eu/m2/c"),
                   backend_site=("eu", "us", "eu"), model=np.array([0, 0, 1]),
                   allowed=np.array([[True, False, True], [True, True, True]]),
                   rtt_ms=np.array([[5.0, 90.0, 5.0], [90.0, 5.0, 90.0]]))
TENANTS = {"sk-sov-eu": Tenant("eu", "EU", "z-eu", allowed_models=frozenset({"m1", "m3"}), rpm=1000),
           "sk-sov-slow": Tenant("slow", "Slow", "z-us", rpm=1)}
AUTH = {"Authorization": "Bearer sk-sov-eu"}
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


async def _call(method: str, path: str, *, gw_kw: dict[str, Any] | None = None, upstream: FakeUpstream | None = None,
                ledger: Any = None, **kw: Any) -> httpx.Response:
    gw = fake_gateway(TABLE, upstream or FakeUpstream(), TENANTS, ledger, **(gw_kw or {}))
    app = create_app(gw, health_checks=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        return await client.request(method, path, **kw)


def call(method: str, path: str, **kw: Any) -> httpx.Response:
    resp: httpx.Response = run(_call(method, path, **kw))
    return resp


def _error(resp: httpx.Response, status: int, code: str | None, param: str | None = None) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    return str(err["message"])


def test_a_good_request_is_routed_inside_the_residency_set_and_audited() -> None:
    r = call("POST", "/v1/chat/completions", json=CHAT, headers={**AUTH, "x-sovcloud-client-zone": "z-us"})
    assert r.status_code == 200, r.text
    # the client is in the US, next to the US backend, but the data is EU data
    assert r.headers["x-sovcloud-region"] == "eu" and r.headers["x-sovcloud-backend"] == "eu/m1/c"
    assert r.headers["x-sovcloud-policy"] == "origin=z-eu; rule=rule; decision=ok"
    assert r.headers["x-sovcloud-request-id"] and r.json()["usage"]["completion_tokens"] == 3


def test_malformed_bodies_are_400_with_the_reason() -> None:
    post = "/v1/chat/completions"
    assert "not valid JSON" in _error(call("POST", post, content=b"{nope", headers=AUTH), 400, "invalid_json")
    assert "JSON object" in _error(call("POST", post, content=b"[1, 2]", headers=AUTH), 400, "invalid_json")
    assert "empty" in _error(call("POST", post, content=b"", headers=AUTH), 400, None)
    bad_utf8 = b'{"model": "m1", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
    assert "UTF-8" in _error(call("POST", post, content=bad_utf8, headers=AUTH), 400, "invalid_encoding")
    cases = [({**CHAT, "messages": "hi"}, "messages"), ({**CHAT, "messages": []}, "messages"),
             ({**CHAT, "max_tokens": "5"}, "max_tokens"), ({**CHAT, "max_tokens": 0}, "max_tokens"),
             ({**CHAT, "max_tokens": 10**9}, "max_tokens"), ({**CHAT, "temperature": 7}, "temperature"),
             ({**CHAT, "stream": "yes"}, "stream"), ({**CHAT, "model": 3}, "model"),
             ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
             ({**CHAT, "messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
             ({**CHAT, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
             ({**CHAT, "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
             ({**CHAT, "n": 99}, "n"), ({**CHAT, "stop": [1]}, "stop")]
    for body, param in cases:
        _error(call("POST", post, json=body, headers=AUTH), 400, None, param)
    _error(call("POST", "/v1/completions", json={"model": "m1", "prompt": [[]]}, headers=AUTH), 400, None, "prompt")
    _error(call("POST", "/v1/embeddings", json={"model": "m1"}, headers=AUTH), 400, None, "input")


def test_a_10_mb_body_is_413_with_or_without_content_length() -> None:
    big = b'{"model": "m1", "messages": [{"role": "user", "content": "' + b"a" * 10_000_000 + b'"}]}'
    assert "limit" in _error(call("POST", "/v1/chat/completions", content=big, headers=AUTH), 413, "body_too_large")

    async def chunks() -> Any:
        for i in range(0, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]
    _error(call("POST", "/v1/chat/completions", content=chunks(), headers=AUTH), 413, "body_too_large")


def test_keys_models_zones_and_paths() -> None:
    post = "/v1/chat/completions"
    assert "API key" in _error(call("POST", post, json=CHAT), 401, "invalid_api_key")
    _error(call("POST", post, json=CHAT, headers={"Authorization": "Bearer sk-sov-wrong"}), 401, "invalid_api_key")
    _error(call("POST", post, json=CHAT, headers={"Authorization": "Basic sk-sov-eu"}), 401, "invalid_api_key")
    _error(call("GET", "/v1/models"), 401, "invalid_api_key")
    msg = _error(call("POST", post, json={**CHAT, "model": "gpt-9"}, headers=AUTH), 404, "model_not_found", "model")
    assert "gpt-9" in msg
    _error(call("POST", post, json={**CHAT, "model": "m3"}, headers=AUTH), 404, "model_not_found")  # served nowhere
    assert "may not use" in _error(call("POST", post, json={**CHAT, "model": "m2"}, headers=AUTH), 403,
                                   "model_not_allowed")
    _error(call("POST", post, json=CHAT, headers={**AUTH, "x-sovcloud-client-zone": "mars"}), 400, "unknown_zone")
    _error(call("GET", "/v2/anything"), 404, "unknown_url")
    _error(call("GET", "/v1/chat/completions"), 405, "method_not_allowed")
    models = call("GET", "/v1/models", headers=AUTH).json()
    assert [m["id"] for m in models["data"]] == ["m1"] and models["data"][0]["sovcloud_regions"] == ["eu"]


def test_rate_limits_and_insufficient_quota() -> None:
    async def two() -> list[httpx.Response]:
        gw = fake_gateway(TABLE, FakeUpstream(), TENANTS)
        app = create_app(gw, health_checks=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            h = {"Authorization": "Bearer sk-sov-slow"}
            return [await c.post("/v1/chat/completions", json=CHAT, headers=h) for _ in range(2)]
    first, second = run(two())
    assert first.status_code == 200
    assert "requests per minute" in _error(second, 429, "rate_limit_exceeded") and second.headers["retry-after"]

    class Broke(FakeLedger):
        async def reserve(self, tenant: Tenant, request_id: str, model: str, prompt_tokens: int,
                          max_tokens: int) -> Reservation:
            raise InsufficientFunds("needs 20 tokens, has 3")
    r = call("POST", "/v1/chat/completions", json=CHAT, headers=AUTH, ledger=Broke())
    assert "needs 20 tokens" in _error(r, 402, "insufficient_quota")
    assert r.json()["error"]["type"] == "insufficient_quota"


def test_overlapped_reservation_never_delivers_what_it_could_not_reserve() -> None:
    class Broke(FakeLedger):
        async def reserve(self, tenant: Tenant, request_id: str, model: str, prompt_tokens: int,
                          max_tokens: int) -> Reservation:
            await asyncio.sleep(0.01)  # the upstream answers first
            raise InsufficientFunds("needs 20 tokens, has 3")

    async def go() -> tuple[list[httpx.Response], FakeUpstream]:
        upstream = FakeUpstream()
        gw = fake_gateway(TABLE, upstream, TENANTS, Broke(), overlap_reservation=True)
        app = create_app(gw, health_checks=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            out = [await c.post("/v1/chat/completions", json={**CHAT, "stream": s}, headers=AUTH)
                   for s in (True, False)]
        return out, upstream
    (stream, plain), upstream = run(go())
    for r in (stream, plain):
        _error(r, 402, "insufficient_quota")
        assert "data:" not in r.text and "hi" not in r.text
    assert upstream.calls == ["eu/m1/c"]  # the first went upstream speculatively; after a refusal, no more

    ledger = FakeLedger()
    r = call("POST", "/v1/chat/completions", json=CHAT, headers=AUTH, ledger=ledger,
             gw_kw={"overlap_reservation": True})
    assert r.status_code == 200 and ledger.settled == [("eu", 5, 3)]


def test_upstream_client_errors_pass_through_and_release_the_reservation() -> None:
    ledger = FakeLedger()
    r = call("POST", "/v1/chat/completions", json=CHAT, headers=AUTH, ledger=ledger,
             upstream=FakeUpstream({"eu/m1/c": "400"}))
    assert r.status_code == 400 and r.headers["x-sovcloud-backend"] == "eu/m1/c"
    assert ledger.released == ["eu"] and ledger.settled == []


def test_streams_are_metered_before_forwarding_and_usage_is_only_sent_when_asked() -> None:
    ledger = FakeLedger()
    body = {**CHAT, "stream": True}
    r = call("POST", "/v1/chat/completions", json=body, headers=AUTH, ledger=ledger)
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and not any("usage" in e for e in events)
    assert ledger.settled == [("eu", 5, 3)] and max(ledger.progress_marks) == 3 and 1 in ledger.progress_marks
    r = call("POST", "/v1/chat/completions", json={**body, "stream_options": {"include_usage": True}}, headers=AUTH)
    assert any('"usage"' in e for e in r.text.split("\n\n"))


def test_streamed_answers_are_not_cached_or_buffered_by_proxies() -> None:
    r = call("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
    plain = call("POST", "/v1/chat/completions", json=CHAT, headers=AUTH)
    assert "x-accel-buffering" not in plain.headers


def test_more_than_one_choice_is_refused_rather_than_silently_dropped() -> None:
    upstream = FakeUpstream()
    for path, body in (("/v1/chat/completions", {**CHAT, "n": 2}),
                       ("/v1/completions", {"model": "m1", "prompt": "x", "max_tokens": 4, "n": 3})):
        msg = _error(call("POST", path, json=body, headers=AUTH, upstream=upstream), 400, None, "n")
        assert "only n=1" in msg
    assert upstream.calls == []  # refused before anything went upstream
    assert call("POST", "/v1/chat/completions", json={**CHAT, "n": 1}, headers=AUTH).status_code == 200


def test_sse_relay_splits_counts_and_filters() -> None:
    relay = SseRelay(include_usage=False)
    a = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"choi'
    out, n = relay.feed(a)
    assert n == 1 and out.endswith(b"\n\n") and out.count(b"data:") == 1
    out, n = relay.feed(b'ces":[{"delta":{"content":"b"}}]}\r\n\r\ndata: {"choices":[],"usage":{"prompt_tokens":2,'
                        b'"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    assert n == 1 and b"usage" not in out and out.endswith(b"data: [DONE]\n\n")
    assert relay.usage == {"prompt_tokens": 2, "completion_tokens": 2} and relay.done and relay.tokens == 2


def test_prompt_estimates_are_conservative_and_count_parts() -> None:
    parts = [{"type": "text", "text": "abc" * 10}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
             {"type": "input_audio", "input_audio": {"data": "A" * 4000, "format": "wav"}},
             {"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}]
    requests = RequestValidator(default_max=16, cap=100)
    p = requests.chat({"model": "m", "messages": [{"role": "user", "content": parts}]})
    assert p.prompt_tokens == 3 + 4 + 10 + IMAGE_TOKENS + (16 + 30) + IMAGE_TOKENS
    assert p.max_tokens == 16 and p.body["max_tokens"] == 16  # the default is sent upstream: a real bound
    c = requests.completion({"model": "m", "prompt": [[1, 2, 3], [4]], "max_tokens": 5, "best_of": 2})
    assert (c.prompt_tokens, c.max_tokens) == (4, 5 * 2 * 2)
    with pytest.raises(ApiError, match="UTF-8"):
        parse_body(b'"\xff"')
    assert orjson.loads(orjson.dumps(p.body))["messages"][0]["content"][1]["type"] == "image_url"


def test_unknown_fields_pass_through_and_the_first_error_is_the_one_reported() -> None:
    requests = RequestValidator(default_max=16, cap=100)
    image = {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [image], "name": "ann"}], "user": "u-1",
            "logit_bias": {"42": -100}, "max_tokens": 4.0, "top_k": 20}
    sent = orjson.dumps(body)
    p = requests.chat(body)
    assert p.body is body and orjson.dumps(p.body) == sent  # forwarded as received, extensions included
    assert p.max_tokens == 4  # 4.0: an integer
    assert p.prompt_tokens == 3 + 4 + IMAGE_TOKENS + 4 + 2  # a named message: + 4 and its 'null' tool_calls
    with pytest.raises(ApiError) as e:  # several fields wrong: the first in the documented order is named
        requests.chat({"model": 3, "messages": [], "max_tokens": 0})
    assert e.value.param == "model"
    with pytest.raises(ApiError) as e:
        requests.chat({**CHAT, "messages": [{"role": "user", "content": "x"}, {"role": "wizard", "content": "y"}]})
    assert e.value.param == "messages[1].role" and "'wizard'" in e.value.message and "assistant, " in e.value.message
    with pytest.raises(ApiError) as e:
        requests.chat({**CHAT, "max_tokens": 101})
    assert e.value.message == "Invalid 'max_tokens': 101 is out of range; give an integer from 1 to 100."
    with pytest.raises(ApiError) as e:
        requests.completion({"model": "m", "prompt": [1, 2, True]})
    assert e.value.param == "prompt" and e.value.status == 400 and e.value.type == "invalid_request_error"


def test_the_openapi_document_is_written_from_the_request_models() -> None:
    doc = call("GET", "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    models = RequestValidator(default_max=1024, cap=32768).models  # the fake gateway's default limits
    for model in (models.chat, models.completion, models.embedding):
        own = model.model_json_schema(ref_template=REF, schema_generator=OpenApi30)
        for name, schema in own.pop("$defs", {}).items():
            assert schemas[name] == schema
        assert schemas[model.__name__] == own
    assert schemas["ChatCompletionRequest"]["properties"]["max_tokens"]["maximum"] == 32768
    refs = {"/v1/chat/completions": "ChatCompletionRequest", "/v1/completions": "CompletionRequest",
            "/v1/embeddings": "EmbeddingRequest"}
    for path, name in refs.items():
        post = doc["paths"][path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"] == f"#/components/schemas/{name}"
        audit = set(post["responses"]["200"]["headers"])
        assert {"x-sovcloud-region", "x-sovcloud-backend", "x-sovcloud-policy", "x-sovcloud-request-id"} <= audit
        for status, answer in post["responses"].items():
            if status != "200":
                assert answer["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
    assert schemas["Error"]["properties"]["error"]["$ref"] == "#/components/schemas/ErrorObject"
    assert set(schemas["ErrorObject"]["required"]) == {"message", "type"}


def test_a_body_that_never_arrives_whole_is_408_after_the_body_timeout() -> None:
    gw = fake_gateway(TABLE, FakeUpstream(), TENANTS, limits={"body_timeout_s": 0.05})
    app = create_app(gw, health_checks=False)
    sent: list[dict[str, Any]] = []
    parts = [{"type": "http.request", "body": b'{"model": "m1", ', "more_body": True}]

    async def receive() -> dict[str, Any]:  # a Content-Length the client never makes good: part, then nothing
        if parts:
            return parts.pop()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
             "root_path": "", "headers": [(b"authorization", b"Bearer sk-sov-eu"), (b"content-length", b"999")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    run(asyncio.wait_for(app(scope, receive, send), 5))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 408
    err = orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))["error"]
    assert err["code"] == "request_timeout" and "did not arrive whole" in err["message"]
    assert gw.parts.state.inflight.sum() == 0
