"""The Responses API over the chat path: the translation both ways, refusals, and metering as for chat."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sovcloud.errors import ApiError
from sovcloud.gateway.api import RequestValidator
from sovcloud.gateway.responses import Echo, ResponseEvents, ResponsesRequests, chat_body, plain_response
from sovcloud.metering.book import Reservation
from sovcloud.metering.tenants import Tenant
from tests.gateway.test_api import AUTH, _error, call
from tests.support.gateway import FakeLedger, FakeUpstream

REQUESTS = ResponsesRequests(RequestValidator(1024, 32768))
ECHO = Echo("m1", "be brief", 0.5, None, 4)
ASK = {"model": "m1", "instructions": "be brief", "input": "hello", "max_output_tokens": 4}
SAME_CHAT = {"model": "m1", "messages": [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "hello"}], "max_tokens": 4}


class RecordingLedger(FakeLedger):
    """The fake ledger, also remembering each reservation's prompt and completion tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.reserved: list[tuple[int, int]] = []

    async def reserve(self, tenant: Tenant, request_id: str, model: str, prompt_tokens: int,
                      max_tokens: int) -> Reservation:
        self.reserved.append((prompt_tokens, max_tokens))
        return await super().reserve(tenant, request_id, model, prompt_tokens, max_tokens)


def _events(data: bytes) -> list[dict[str, Any]]:
    """The events of a Responses stream, each checked to name its type on its ``event:`` line."""
    out = []
    for block in data.split(b"\n\n"):
        if not block:
            continue
        head, body = block.split(b"\n")
        event = orjson.loads(body.removeprefix(b"data: "))
        assert head == b"event: " + event["type"].encode()
        out.append(event)
    return out


def _chunk(**fields: Any) -> bytes:
    return b"data: " + orjson.dumps({"id": "c", **fields}) + b"\n\n"


# ---- request: Responses -> chat ---------------------------------------------------------------------------
def test_a_string_input_with_instructions_becomes_a_system_and_a_user_message() -> None:
    assert chat_body({**ASK, "temperature": 0.5, "top_p": 0.9, "store": True}) == {
        **SAME_CHAT, "temperature": 0.5, "top_p": 0.9}


def test_message_items_keep_their_roles_and_text_parts() -> None:
    body = {"model": "m1", "stream": True, "input": [
        {"role": "developer", "content": "terse"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                          {"type": "input_text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "c", "annotations": []}]}]}
    assert chat_body(body) == {"model": "m1", "stream": True, "stream_options": {"include_usage": True}, "messages": [
        {"role": "developer", "content": "terse"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}]}]}


def test_the_reservation_is_the_one_of_the_equivalent_chat_request() -> None:
    parsed, echo = REQUESTS.check(dict(ASK))
    chat = RequestValidator(1024, 32768).chat(dict(SAME_CHAT))
    assert (parsed.prompt_tokens, parsed.max_tokens, parsed.stream) == (chat.prompt_tokens, chat.max_tokens, False)
    assert echo == Echo("m1", "be brief", None, None, 4)
    parsed, echo = REQUESTS.check({"model": "m1", "input": "hello", "stream": True})
    assert parsed.max_tokens == 1024 == echo.max_output_tokens and parsed.body["max_tokens"] == 1024
    assert parsed.stream and parsed.include_usage


@pytest.mark.parametrize(("field", "value"), [
    ("tools", [{"type": "function", "name": "f"}]), ("previous_response_id", "resp_1"), ("background", True),
    ("conversation", "conv_1"), ("tool_choice", "required"), ("text", {"format": {"type": "json_object"}}),
    ("reasoning", {"effort": "high"}), ("include", ["reasoning.encrypted_content"]), ("truncation", "auto")])
def test_fields_that_cannot_be_honoured_are_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(ApiError) as info:
        REQUESTS.check({**ASK, field: value})
    assert info.value.status == 400 and info.value.param == field and info.value.code == "unsupported_parameter"
    assert f"'{field}'" in info.value.message


def test_neutral_values_of_those_fields_are_accepted() -> None:
    body = {**ASK, "tools": [], "background": False, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "truncation": "disabled", "previous_response_id": None}
    assert REQUESTS.check(body)[0].body == SAME_CHAT


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m1"}, "input"),
    ({"model": "m1", "input": []}, "input"),
    ({"model": "m1", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "input[0].type"),
    ({"model": "m1", "input": [{"role": "bot", "content": "x"}]}, "input[0].role"),
    ({"model": "m1", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content[0].type"),
    ({"model": "m1", "input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text"),
    ({**ASK, "max_output_tokens": 40000}, "max_output_tokens"),
    ({**ASK, "max_output_tokens": 0}, "max_output_tokens"),
    ({**ASK, "temperature": 3}, "temperature"),
    ({**ASK, "stream": "yes"}, "stream"),
    ({"input": "x"}, "model")])
def test_invalid_fields_are_400_naming_the_responses_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as info:
        REQUESTS.check(body)
    assert info.value.status == 400 and info.value.param == param and f"'{param}'" in info.value.message


# ---- answer: chat -> Response -----------------------------------------------------------------------------
def _answer(finish: str | None, usage: dict[str, Any] | None = None) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": "Bonjour"}, "finish_reason": finish}
    return orjson.dumps({"id": "c", "created": 1700000000, "choices": [choice], **({"usage": usage} if usage else {})})


def test_a_chat_completion_becomes_a_response_object() -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9,
             "prompt_tokens_details": {"cached_tokens": 3}}
    out = orjson.loads(plain_response(_answer("stop", usage), ECHO, "abc"))
    assert out["id"] == "resp_abc" and out["object"] == "response" and out["created_at"] == 1700000000
    assert (out["status"], out["model"], out["instructions"]) == ("completed", "m1", "be brief")
    assert out["temperature"] == 0.5 and out["max_output_tokens"] == 4
    assert out["incomplete_details"] is None and out["error"] is None and out["store"] is False
    assert out["output"] == [{"type": "message", "id": "msg_abc", "role": "assistant", "status": "completed",
                              "content": [{"type": "output_text", "text": "Bonjour", "annotations": [],
                                           "logprobs": []}]}]
    assert out["usage"] == {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
                            "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 9}


def test_a_choice_cut_by_max_tokens_is_an_incomplete_response() -> None:
    out = orjson.loads(plain_response(_answer("length"), ECHO, "abc"))
    assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": "max_output_tokens"}
    assert out["output"][0]["status"] == "incomplete" and out["usage"] is None


def test_an_answer_without_a_choice_is_a_failed_response() -> None:
    out = orjson.loads(plain_response(b'{"choices": []}', ECHO, "abc"))
    assert out["status"] == "failed" and out["output"] == [] and out["error"]["code"] == "server_error"


# ---- stream: chat chunks -> Responses events -------------------------------------------------------------
STREAM = (_chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "Bon"}}])
          + _chunk(choices=[{"index": 0, "delta": {"content": ""}}])
          + _chunk(choices=[{"index": 0, "delta": {"content": "jour"}}])
          + _chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
          + _chunk(choices=[], usage={"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9})
          + b"data: [DONE]\n\n")


def test_a_chat_stream_becomes_the_events_the_sdk_expects() -> None:
    ev = ResponseEvents(ECHO, "abc", 1700000000)
    events = _events(ev.feed(STREAM) + ev.close())
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["usage"] is None
    assert [e["delta"] for e in events[4:6]] == ["Bon", "jour"]
    assert all(e["item_id"] == "msg_abc" for e in events[3:8])
    assert events[6]["text"] == "Bonjour" and events[7]["part"]["text"] == "Bonjour"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "Bonjour"
    assert final["usage"]["input_tokens"] == 7 and final["usage"]["output_tokens"] == 2
    assert final["output"] == [events[8]["item"]]


def test_the_events_do_not_depend_on_how_the_bytes_are_split() -> None:
    whole = ResponseEvents(ECHO, "abc", 1)
    expected = whole.feed(STREAM) + whole.close()
    split = ResponseEvents(ECHO, "abc", 1)
    got = b"".join(split.feed(STREAM[i:i + 7]) for i in range(0, len(STREAM), 7)) + split.close()
    assert got == expected


def test_a_stream_cut_by_max_tokens_ends_incomplete_and_a_broken_one_fails() -> None:
    ev = ResponseEvents(ECHO, "abc", 1)
    cut = _events(ev.feed(STREAM.replace(b'"stop"', b'"length"')) + ev.close())
    assert cut[-1]["type"] == "response.incomplete"
    assert cut[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    ev = ResponseEvents(ECHO, "abc", 1)
    broken = _chunk(choices=[{"index": 0, "delta": {"content": "Bon"}}]) + b'data: {"error": {"message": "cut", ' \
        b'"type": "server_error", "param": null, "code": "upstream_error"}}\n\n'
    events = _events(ev.feed(broken) + ev.close())
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == "upstream_error" and events[-2]["message"] == "cut"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["output"][0]["status"] == "incomplete"


# ---- through the gateway, with the fakes -----------------------------------------------------------------
def test_a_response_is_routed_audited_and_metered_as_the_equivalent_chat_request() -> None:
    ours, theirs = RecordingLedger(), RecordingLedger()
    r = call("POST", "/v1/responses", json=ASK, headers={**AUTH, "x-sovcloud-client-zone": "z-us"}, ledger=ours)
    chat = call("POST", "/v1/chat/completions", json=SAME_CHAT, headers=AUTH, ledger=theirs)
    assert r.status_code == 200 and chat.status_code == 200, r.text
    assert r.headers["x-sovcloud-region"] == "eu"  # the client is in the US; the data is EU data
    assert r.headers["x-sovcloud-policy"] == "origin=z-eu; rule=rule; decision=ok"
    out = r.json()
    assert out["id"] == "resp_" + r.headers["x-sovcloud-request-id"] and out["model"] == "m1"
    assert out["output"][0]["content"][0]["text"] == chat.json()["choices"][0]["message"]["content"]
    assert out["usage"]["output_tokens"] == chat.json()["usage"]["completion_tokens"] == 3
    assert int(r.headers["content-length"]) == len(r.content)
    assert ours.reserved == theirs.reserved and ours.settled == theirs.settled == [("eu", 5, 3)]
    assert ours.released == theirs.released == []


def test_a_streamed_response_is_metered_as_the_equivalent_chat_stream() -> None:
    ours, theirs = RecordingLedger(), RecordingLedger()
    r = call("POST", "/v1/responses", json={**ASK, "stream": True}, headers=AUTH, ledger=ours)
    chat = call("POST", "/v1/chat/completions", headers=AUTH, ledger=theirs,
                json={**SAME_CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and chat.status_code == 200, r.text
    assert r.headers["content-type"] == "text/event-stream" and r.headers["cache-control"] == "no-cache"
    events = _events(r.content)
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "hihihi"
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["usage"]["total_tokens"] == 8
    assert ours.reserved == theirs.reserved and ours.settled == theirs.settled == [("eu", 5, 3)]
    assert ours.progress_marks == theirs.progress_marks


def test_refusals_keep_openais_error_shape_and_release_nothing_reserved() -> None:
    ledger = RecordingLedger()
    _error(call("POST", "/v1/responses", json={**ASK, "background": True}, headers=AUTH, ledger=ledger), 400,
           "unsupported_parameter", "background")
    _error(call("POST", "/v1/responses", json={**ASK, "model": "gpt-5"}, headers=AUTH), 404, "model_not_found")
    _error(call("POST", "/v1/responses", json=ASK), 401, "invalid_api_key")
    _error(call("GET", "/v1/responses", headers=AUTH), 405, "method_not_allowed")
    assert ledger.reserved == []
    r = call("POST", "/v1/responses", json=ASK, headers=AUTH, upstream=FakeUpstream({"eu/m1/c": "400"}), ledger=ledger)
    _error(r, 400, None)
    assert ledger.reserved == [(ledger.reserved[0][0], 4)] and ledger.released == ["eu"] and ledger.settled == []


def test_the_openapi_document_describes_the_endpoint() -> None:
    doc = call("GET", "/openapi.json").json()
    post = doc["paths"]["/v1/responses"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ResponsesRequest")
    assert "max_output_tokens" in doc["components"]["schemas"]["ResponsesRequest"]["properties"]
    assert "ResponseObject" in doc["components"]["schemas"] and "unsupported_parameter" in post["responses"]["400"][
        "description"]
