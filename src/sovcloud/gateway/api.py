"""The gateway's request side: OpenAI-format errors, body validation and the prompt-token estimate.

A body is parsed with orjson (a 400 for empty, non-UTF-8 or non-JSON bodies and for anything but an object),
then validated by the request models of :mod:`sovcloud.gateway.bodies`, the same models that write the
OpenAPI document. The first error is refused with a 400 whose ``param`` names the field as a path
(``messages[0].content[1].text``) and whose message says what is expected. The JSON object received is what
goes upstream: unknown fields pass through untouched (vLLM and SGLang accept many extensions); the only
change is that a missing ``max_tokens`` is set to the default, so the reservation is a bound the upstream
knows.

One choice per request is served: ``n`` above 1 is refused (400, ``param: n``) rather than answered with fewer
choices than asked or with choices the reservation did not cover.

Prompt tokens are *estimated* for the admission reservation (no tokenizer is available offline), on the
high side, and the charge is settled on the upstream's ``usage``:

    text           ceil(UTF-8 bytes / 3)            (BPE tokenizers average 3.5-4.5 bytes per token)
    message        + 4 per message (role and separators)
    token arrays   their length (exact)
    image part     + 2048 per image_url / video part  (a 1024 x 1024 image is ~1,340 Qwen2.5-VL tokens)
    audio part     + 16 + ceil(decoded bytes / 100)  (~25 audio tokens per second at >= 20 kbit/s)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import orjson
from pydantic import ValidationError

from sovcloud.errors import ApiError
from sovcloud.gateway.bodies import Error, RequestModels, capped
from sovcloud.gateway.refusal import Refusals
from sovcloud.gateway.uploads import Upload

__all__ = ["IMAGE_TOKENS", "ParsedRequest", "RequestValidator", "api_error_body", "error_body", "parse_body",
           "text_token_estimate"]

IMAGE_TOKENS = 2048


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    """The OpenAI error object as JSON (the ``Error`` schema of the OpenAPI document)."""
    body: Error = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return orjson.dumps(body)


def api_error_body(exc: ApiError) -> bytes:
    """The OpenAI-style JSON body of a refusal."""
    return error_body(exc.message, exc.type, exc.param, exc.code)


@dataclass(slots=True)
class ParsedRequest:
    """What admission needs from a valid request; ``body`` is the dict forwarded upstream."""

    body: dict[str, Any]
    model: str
    prompt_tokens: int
    max_tokens: int  # completion tokens reserved (max_tokens, x best_of x prompts for completions; 0 for embeddings)
    stream: bool
    include_usage: bool
    upload: Upload | None = None  # a multipart request (audio transcriptions): sent upstream re-encoded


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or a 400 saying what is wrong with it."""
    if not raw:
        raise ApiError(400, "The request body is empty; send a JSON object (Content-Type: application/json).")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc) or "utf-8" in str(exc):
            raise ApiError(400, "The request body is not valid UTF-8; encode the JSON as UTF-8.",
                           code="invalid_encoding") from None
        raise ApiError(400, f"The request body is not valid JSON ({exc.msg} at line {exc.lineno} column "
                            f"{exc.colno}); send a JSON object.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"The request body must be a JSON object (got a JSON {type(data).__name__}).",
                       code="invalid_json")
    return data


def text_token_estimate(s: str) -> int:
    """Tokens the gateway reserves for a text: ceil(UTF-8 bytes / 3) (generous: most tokenizers give about 4)."""
    return _text_tokens(s)


def _text_tokens(s: str) -> int:
    n = len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))
    return -(-n // 3)


def _content_tokens(content: Any) -> int:
    """Tokens of a checked message content: a string or content parts (raw, as sent)."""
    if isinstance(content, str):
        return _text_tokens(content)
    tokens = 0
    for part in content or ():
        kind = part["type"]
        if kind == "text":
            tokens += _text_tokens(part["text"])
        elif kind == "input_audio":
            tokens += 16 + math.ceil(len(part["input_audio"]["data"]) * 3 / 4 / 100)
        else:  # image_url, and video_url, audio_url, file and other omni parts: reserved generously
            tokens += IMAGE_TOKENS
    return tokens


def _chat_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of a checked chat body: its messages, and the fields sent along but not checked."""
    tokens = 3
    for m in body["messages"]:
        tokens += 4 + _content_tokens(m.get("content"))
        if m.get("tool_calls") is not None or m.get("name") is not None:
            tokens += _text_tokens(orjson.dumps(m.get("tool_calls")).decode()) + 4
    for extra in ("tools", "functions", "response_format"):
        if body.get(extra) is not None:
            tokens += _text_tokens(orjson.dumps(body[extra]).decode())
    return tokens


def _prompt_tokens(prompt: str | list[str] | list[int] | list[list[int]]) -> int:
    """Tokens of a checked completion prompt / embedding input: a string, strings, a token array or token arrays
    (the first element tells which)."""
    if isinstance(prompt, str):
        return _text_tokens(prompt)
    first = prompt[0]
    if isinstance(first, int):
        return len(prompt)
    if isinstance(first, str):
        return sum(_text_tokens(x) for x in cast(list[str], prompt))
    return sum(len(x) for x in cast(list[list[int]], prompt))


class RequestValidator:
    """Checks the bodies of the three generating endpoints against the request models of one gateway.

    ``default_max`` completion tokens are reserved (and sent upstream) when a request gives no
    ``max_tokens``; ``cap`` is the largest ``max_tokens`` accepted."""

    def __init__(self, default_max: int, cap: int) -> None:
        self.default_max = default_max
        self.models: RequestModels = capped(cap)
        self._refuse_chat, self._refuse_completion, self._refuse_embedding = (
            Refusals(self.models.chat), Refusals(self.models.completion), Refusals(self.models.embedding))

    def _max_tokens(self, body: dict[str, Any], given: int | None) -> int:
        if given is not None:
            return given
        body["max_tokens"] = self.default_max  # the reservation is a real bound only if the upstream is told it
        return self.default_max

    def chat(self, body: dict[str, Any]) -> ParsedRequest:
        """Check a chat completion request and estimate its prompt tokens."""
        try:
            req = self.models.chat.model_validate(body)
        except ValidationError as exc:
            raise self._refuse_chat(exc) from None
        given = req.max_tokens if req.max_tokens is not None else req.max_completion_tokens
        max_t = self._max_tokens(body, given)
        include = req.stream_options is not None and bool(req.stream_options.get("include_usage"))
        return ParsedRequest(body, req.model, _chat_tokens(body), max_t, bool(req.stream), include)

    def completion(self, body: dict[str, Any]) -> ParsedRequest:
        """Check a legacy text completion request (``prompt``) and estimate its prompt tokens."""
        try:
            req = self.models.completion.model_validate(body)
        except ValidationError as exc:
            raise self._refuse_completion(exc) from None
        prompt = req.prompt
        prompts = len(prompt) if isinstance(prompt, list) and not isinstance(prompt[0], int) else 1
        max_t = self._max_tokens(body, req.max_tokens)
        include = req.stream_options is not None and bool(req.stream_options.get("include_usage"))
        return ParsedRequest(body, req.model, _prompt_tokens(prompt), max_t * (req.best_of or 1) * prompts,
                             bool(req.stream), include)

    def embedding(self, body: dict[str, Any]) -> ParsedRequest:
        """Check an embeddings request; nothing is generated, so only the input is reserved."""
        try:
            req = self.models.embedding.model_validate(body)
        except ValidationError as exc:
            raise self._refuse_embedding(exc) from None
        return ParsedRequest(body, req.model, _prompt_tokens(req.input), 0, False, False)
