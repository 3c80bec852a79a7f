"""The OpenAI Responses API (``POST /v1/responses``) served as a chat completion, both ways.

The backends speak chat completions, so a Responses request is checked (:class:`ResponsesRequests`), turned
into the equivalent chat completion body and sent down the gateway's chat path: the same admission, routing,
reservation, failover and settlement as that chat request (the reservation is estimated from the translated
body, so it is the one the chat request would hold). The request maps as

    instructions          a system message, first
    input (string)        one user message
    input (items)         one message per item (role kept; content a string, or input_text / output_text
                          parts as text parts)
    max_output_tokens     max_tokens (left out: the gateway's default, as for chat)
    temperature, top_p    as they are
    stream                stream, with ``stream_options.include_usage`` so the final usage is known

Fields that need server-side state, tools or output formats the chat path cannot honour (``tools``,
``previous_response_id``, ``background``, ...: :data:`UNSUPPORTED`) are refused with a 400 naming the
parameter (code ``unsupported_parameter``) unless they hold their neutral value; other fields not declared
are ignored. Nothing is stored, so every answer says ``store: false``.

The answer maps back into a Response object: the first choice's text as one ``output_text`` part of one
assistant message, the upstream's usage as ``input_tokens`` / ``output_tokens`` / ``total_tokens``. A choice
that stopped on ``length`` (or ``content_filter``) makes the response ``incomplete`` with
``incomplete_details.reason`` ``max_output_tokens`` (or ``content_filter``), as OpenAI answers. Ids derive from
the gateway's request id (``resp_<id>``, ``msg_<id>``). A stream is translated event by event
(:class:`ResponseEvents`, sent by :class:`ResponsesStream`): ``response.created``, ``response.in_progress``,
``response.output_item.added``, ``response.content_part.added``, one ``response.output_text.delta`` per chunk
with text, then ``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done`` and
``response.completed`` (or ``response.incomplete``) with the usage; a stream that breaks off ends with an
``error`` event and ``response.failed``. Every event is ``event: <type>`` / ``data: <json>`` with a
``sequence_number`` from 0. Refusals keep OpenAI's error object, as on every endpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from sovcloud.errors import ApiError
from sovcloud.gateway.api import ParsedRequest, RequestValidator
from sovcloud.gateway.bodies import TAGS

__all__ = ["UNSUPPORTED", "Echo", "ResponseEvents", "ResponsesRequests", "ResponsesStream", "chat_body",
           "plain_response", "response_object"]

# field -> the values it may hold (besides null) because they change nothing; any other value is refused
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": ([],),
    "tool_choice": ("none", "auto"),
    "previous_response_id": (),
    "conversation": (),
    "background": (False,),
    "prompt": (),
    "reasoning": ({},),
    "text": ({}, {"format": {"type": "text"}}),
    "include": ([],),
    "truncation": ("disabled",),
    "top_logprobs": (0,),
}
_WHY = {
    "tools": "tools and function calling are not served on /v1/responses",
    "tool_choice": "tools and function calling are not served on /v1/responses",
    "previous_response_id": "responses are not stored; send the whole conversation in 'input'",
    "conversation": "conversations are not stored; send the whole conversation in 'input'",
    "background": "background responses are not served; send the request without it",
    "prompt": "stored prompt templates are not served; send the text in 'instructions' and 'input'",
}
_FINISH = {"length": "max_output_tokens", "content_filter": "content_filter"}  # finish_reason -> incomplete


def _unsupported(body: dict[str, Any]) -> ApiError | None:
    """The 400 for the first field set to a value the gateway cannot honour (None if there is none)."""
    for name, neutral in UNSUPPORTED.items():
        value = body.get(name)
        if value is None or any(value == v and type(value) is type(v) for v in neutral):
            continue
        why = _WHY.get(name, f"'{name}' is not served on /v1/responses; leave it out")
        return ApiError(400, f"Unsupported parameter '{name}': {why}.", param=name, code="unsupported_parameter")
    return None


def _invalid(exc: ValidationError) -> ApiError:
    """The 400 of the first validation error, its location as a path (``input[0].content[1].text``)."""
    err = exc.errors(include_url=False)[0]
    param = ""
    for x in err["loc"]:
        if isinstance(x, int):
            param = f"{param}[{x}]"
        elif x not in TAGS:
            param = f"{param}.{x}" if param else str(x)
    if err["type"] == "missing" and param == "input":
        text = "an input (a string, or a non-empty list of messages) is required."
    elif param.endswith("].role"):
        text = "expected one of 'user', 'system', 'developer' or 'assistant'."
    elif param.endswith("].type") and "content" not in param:
        text = "only message items are served (no function calls, reasoning or item references)."
    else:
        text = f"{err['msg']}."
    return ApiError(400, f"Invalid '{param}': {text}", param=param)


def _content(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    return content if isinstance(content, str) else [{"type": "text", "text": p["text"]} for p in content]


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completion body of a checked Responses body, mapped as the table of this module says."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions") is not None:
        messages.append({"role": "system", "content": body["instructions"]})
    given = body["input"]
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    else:
        messages += [{"role": item["role"], "content": _content(item["content"])} for item in given]
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


@dataclass(frozen=True, slots=True)
class Echo:
    """What a Response object repeats of its request (``max_output_tokens``: the bound the upstream was told)."""

    model: str
    instructions: str | None
    temperature: float | None
    top_p: float | None
    max_output_tokens: int


class ResponsesRequests:
    """Checks Responses bodies against the request model of one gateway and translates them to chat requests,
    checked and estimated by that gateway's chat validator."""

    def __init__(self, requests: RequestValidator) -> None:
        self._model, self._chat = requests.models.responses, requests.chat

    def check(self, body: dict[str, Any]) -> tuple[ParsedRequest, Echo]:
        """The chat request of a Responses body (what admission and the upstream see) and its echo."""
        refused = _unsupported(body)
        if refused is not None:
            raise refused
        try:
            req = self._model.model_validate(body)
        except ValidationError as exc:
            raise _invalid(exc) from None
        parsed = self._chat(chat_body(body))
        return parsed, Echo(req.model, req.instructions, req.temperature, req.top_p, parsed.max_tokens)


def _message(rid: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": f"msg_{rid}", "role": "assistant", "status": status, "content": [part]}


def _n(obj: Any, key: str) -> int:
    """A token count of a usage object (0 unless a non-negative integer)."""
    v = obj.get(key) if isinstance(obj, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def _usage(u: Any) -> dict[str, Any] | None:
    """A chat ``usage`` as a Response's (None when the upstream gave none)."""
    if not isinstance(u, dict):
        return None
    prompt, completion = _n(u, "prompt_tokens"), _n(u, "completion_tokens")
    cached = _n(u.get("prompt_tokens_details"), "cached_tokens")
    reasoning = _n(u.get("completion_tokens_details"), "reasoning_tokens")
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": _n(u, "total_tokens") or prompt + completion}


def response_object(echo: Echo, rid: str, created: int, status: str, output: list[dict[str, Any]],
                    usage: dict[str, Any] | None, *, finish: str | None = None,
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Response object of request ``rid`` (``finish``: the chat finish reason, for ``incomplete_details``)."""
    incomplete = {"reason": _FINISH[finish]} if status == "incomplete" and finish in _FINISH else None
    return {"id": f"resp_{rid}", "object": "response", "created_at": created, "status": status,
            "background": False, "error": error, "incomplete_details": incomplete, "instructions": echo.instructions,
            "max_output_tokens": echo.max_output_tokens, "metadata": {}, "model": echo.model, "output": output,
            "parallel_tool_calls": False, "previous_response_id": None, "store": False,
            "temperature": echo.temperature, "text": {"format": {"type": "text"}}, "tool_choice": "none",
            "tools": [], "top_p": echo.top_p, "truncation": "disabled", "usage": usage}


def plain_response(data: bytes, echo: Echo, rid: str) -> bytes:
    """The Response object (JSON) of a non-streamed chat completion ``data``."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        answer = None
    choices = answer.get("choices") if isinstance(answer, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if choice is None:
        err = {"code": "server_error", "message": "The upstream's answer held no choice."}
        out = response_object(echo, rid, int(time.time()), "failed", [], None, error=err)
        return orjson.dumps(out)
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else None
    finish = choice.get("finish_reason")
    status = "incomplete" if finish in _FINISH else "completed"
    created = answer.get("created") if isinstance(answer, dict) else None
    when = created if isinstance(created, int) and not isinstance(created, bool) else int(time.time())
    out = response_object(echo, rid, when, status, [_message(rid, text if isinstance(text, str) else "", status)],
                          _usage(answer.get("usage") if isinstance(answer, dict) else None), finish=finish)
    return orjson.dumps(out)


def _data(event: bytes) -> Any:
    """The JSON of an SSE event's data lines (``[DONE]`` and anything unparsable: None)."""
    data = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
    if not data or data == b"[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


class ResponseEvents:
    """Translates the chat completion chunks of one stream into Responses events: ``feed(bytes) -> bytes``
    as the chunks come (any split), then ``close() -> bytes`` with the closing events."""

    def __init__(self, echo: Echo, rid: str, created: int) -> None:
        self.echo, self.rid, self.created = echo, rid, created
        self.item = f"msg_{rid}"
        self.seq = 0
        self.text: list[str] = []
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self.error: dict[str, Any] | None = None
        self._buf = b""
        self._started = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.item, "output_index": 0, "content_index": 0}

    def _opening(self) -> bytes:
        self._started = True
        head = response_object(self.echo, self.rid, self.created, "in_progress", [], None)
        item = {"type": "message", "id": self.item, "role": "assistant", "status": "in_progress", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return b"".join((self._event("response.created", response=head),
                         self._event("response.in_progress", response=head),
                         self._event("response.output_item.added", output_index=0, item=item),
                         self._event("response.content_part.added", **self._where(), part=part)))

    def _chunk(self, obj: Any) -> bytes:
        if not isinstance(obj, dict):
            return b""
        if isinstance(obj.get("error"), dict):
            self.error = obj["error"]
            return b""
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
        out = []
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) and text:
                self.text.append(text)
                out.append(self._event("response.output_text.delta", **self._where(), delta=text, logprobs=[]))
        return b"".join(out)

    def feed(self, chunk: bytes) -> bytes:
        """The events of the complete chat chunks received so far (the opening events first)."""
        out = [] if self._started else [self._opening()]
        buf = self._buf + chunk
        events = buf.split(b"\n\n")
        self._buf = events.pop()
        # an SSE comment (the gateway's keep-alive) passes through as it is
        out += [event + b"\n\n" if event.startswith(b":") else self._chunk(_data(event)) for event in events]
        return b"".join(out)

    def close(self) -> bytes:
        """The closing events: the finished text, part and message, then the final Response with its usage
        (or, when the stream broke off, an ``error`` event and the failed Response)."""
        out = [self.feed(b"\n\n")] if self._buf.strip() or not self._started else []
        text = "".join(self.text)
        if self.error is not None:
            message, code = str(self.error.get("message") or "The stream failed."), self.error.get("code")
            item = _message(self.rid, text, "incomplete")
            failed = response_object(self.echo, self.rid, self.created, "failed", [item], _usage(self.usage),
                                     error={"code": "server_error", "message": message})
            out += [self._event("error", code=code, message=message, param=None),
                    self._event("response.failed", response=failed)]
            return b"".join(out)
        status = "incomplete" if self.finish in _FINISH else "completed"
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = _message(self.rid, text, status)
        final = response_object(self.echo, self.rid, self.created, status, [item], _usage(self.usage),
                                finish=self.finish)
        out += [self._event("response.output_text.done", **self._where(), text=text, logprobs=[]),
                self._event("response.content_part.done", **self._where(), part=part),
                self._event("response.output_item.done", output_index=0, item=item),
                self._event(f"response.{status}", response=final)]
        return b"".join(out)


class ResponsesStream(Response):
    """The SSE response of a streamed ``/v1/responses``: the gateway's chat stream (metered as a chat stream)
    with every body it sends translated by ``events``."""

    def __init__(self, inner: Response, events: ResponseEvents) -> None:
        self.status_code = 200
        self.raw_headers = inner.raw_headers
        self.background = None
        self._inner, self._events = inner, events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        events = self._events

        async def translated(message: Message) -> None:
            if message["type"] == "http.response.body":
                more = bool(message.get("more_body", False))
                body = events.feed(message.get("body", b""))
                message = {"type": "http.response.body", "body": body + events.close() if not more else body,
                           "more_body": more}
            await send(message)

        await self._inner(scope, receive, translated)
