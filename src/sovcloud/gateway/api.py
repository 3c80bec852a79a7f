"""The gateway's request side: OpenAI-format errors, body validation and the prompt-token estimate.

Every check here mirrors a constraint of the OpenAPI schema (:mod:`sovcloud.gatewayschema`), so what the
schema declares invalid is refused with a 400 naming the parameter, and what it declares valid is passed
on. Unknown fields pass through untouched (vLLM and SGLang accept many extensions).

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
from typing import Any

import orjson

from sovcloud.errors import ApiError

__all__ = [
    "ParsedRequest",
    "api_error_body",
    "error_body",
    "parse_body",
    "validate_chat",
    "validate_completion",
    "validate_embedding",
]

IMAGE_TOKENS = 2048
ROLES = frozenset({"system", "user", "assistant", "tool", "function", "developer"})
_NUMBER_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0),
                  "frequency_penalty": (-2.0, 2.0)}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def api_error_body(exc: ApiError) -> bytes:
    """The OpenAI-style JSON body of a refusal."""
    return error_body(exc.message, exc.type, exc.param, exc.code)


@dataclass(slots=True)
class ParsedRequest:
    """What admission needs from a valid request; ``body`` is the dict forwarded upstream."""

    body: dict[str, Any]
    model: str
    prompt_tokens: int
    max_tokens: int  # completion tokens reserved (max_tokens x n; 0 for embeddings)
    stream: bool
    include_usage: bool


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"Invalid '{param}': {message}", param=param)


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


def _text_tokens(s: str) -> int:
    n = len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))
    return -(-n // 3)


def _int(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        raise _bad(name, f"expected an integer (got {orjson.dumps(v).decode()[:40]}).")
    if not lo <= v <= hi:
        raise _bad(name, f"{v:g} is out of range; give an integer from {lo} to {hi}.")
    return int(v)


def _common(body: dict[str, Any], cap: int) -> tuple[str, bool, bool, int]:
    """model, stream, include_usage, n (the checks every generating endpoint shares)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "a model name (string) is required; list them with GET /v1/models.")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("stream", "expected true or false.")
    opts = body.get("stream_options")
    include = False
    if opts is not None:
        if not isinstance(opts, dict):
            raise _bad("stream_options", "expected an object such as {\"include_usage\": true}.")
        inc = opts.get("include_usage", False)
        if not isinstance(inc, bool) and inc is not None:
            raise _bad("stream_options.include_usage", "expected true or false.")
        include = bool(inc)
    for name, (lo, hi) in _NUMBER_RANGES.items():
        v = body.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi):
            raise _bad(name, f"expected a number from {lo:g} to {hi:g}.")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)):
        raise _bad("stop", "expected a string or a list of up to 4 strings.")
    _int(body, "seed", -(2**63), 2**63 - 1)
    n = _int(body, "n", 1, 16) or 1
    return model, stream, include, n


def _max_tokens(body: dict[str, Any], names: tuple[str, ...], default: int, cap: int) -> int:
    for name in names:
        v = _int(body, name, 1, cap)
        if v is not None:
            return v
    body[names[0]] = default  # the reservation is a real bound only if the upstream is told it
    return default


def _part_tokens(part: Any, where: str) -> int:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise _bad(where, "each content part must be an object with a string 'type'.")
    kind = part["type"]
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise _bad(f"{where}.text", "a text part needs a string 'text'.")
        return _text_tokens(text)
    if kind == "image_url":
        img = part.get("image_url")
        url = img.get("url") if isinstance(img, dict) else img
        if not isinstance(url, str):
            raise _bad(f"{where}.image_url", "expected {\"url\": \"https://... or data:image/...\"}.")
        return IMAGE_TOKENS
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise _bad(f"{where}.input_audio", "expected {\"data\": \"<base64>\", \"format\": \"wav\"}.")
        return 16 + math.ceil(len(audio["data"]) * 3 / 4 / 100)
    return IMAGE_TOKENS  # video_url, audio_url, file and other omni parts: passed through, reserved generously


def validate_chat(body: dict[str, Any], default_max: int, cap: int) -> ParsedRequest:
    """Check a chat completion request and estimate its prompt tokens."""
    model, stream, include, n = _common(body, cap)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "a non-empty list of {\"role\", \"content\"} objects is required.")
    tokens = 3
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(where, "each message must be an object with 'role' and 'content'.")
        role = m.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise _bad(f"{where}.role", f"expected one of {', '.join(sorted(ROLES))} (got {str(role)[:40]!r}).")
        content = m.get("content")
        tokens += 4
        if isinstance(content, str):
            tokens += _text_tokens(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                tokens += _part_tokens(part, f"{where}.content[{j}]")
        elif content is not None or role not in ("assistant", "tool", "function"):
            raise _bad(f"{where}.content", "expected a string or a list of content parts.")
        if m.get("tool_calls") is not None or m.get("name") is not None:
            tokens += _text_tokens(orjson.dumps(m.get("tool_calls")).decode()) + 4
    for extra in ("tools", "functions", "response_format"):
        if body.get(extra) is not None:
            tokens += _text_tokens(orjson.dumps(body[extra]).decode())
    max_t = _max_tokens(body, ("max_tokens", "max_completion_tokens"), default_max, cap)
    return ParsedRequest(body, model, tokens, max_t * n, stream, include)


def _token_id(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31


def _prompt_tokens(value: Any, param: str) -> int:
    """Tokens of a completion prompt / embedding input: a string, strings, a token array or token arrays."""
    if isinstance(value, str):
        return _text_tokens(value)
    if isinstance(value, list) and value:
        if all(isinstance(x, str) for x in value):
            return sum(_text_tokens(x) for x in value)
        if all(_token_id(x) for x in value):
            return len(value)
        if all(isinstance(x, list) and x and all(_token_id(t) for t in x) for x in value):
            return sum(len(x) for x in value)
    raise _bad(param, "expected a string, a non-empty list of strings, a token array or a list of token arrays.")


def validate_completion(body: dict[str, Any], default_max: int, cap: int) -> ParsedRequest:
    """Check a legacy text completion request (``prompt``) and estimate its prompt tokens."""
    model, stream, include, n = _common(body, cap)
    if "prompt" not in body:
        raise _bad("prompt", "a prompt (string, strings or token arrays) is required.")
    prompt = body["prompt"]
    tokens = _prompt_tokens(prompt, "prompt")
    prompts = len(prompt) if isinstance(prompt, list) and not isinstance(prompt[0], int) else 1
    best_of = _int(body, "best_of", 1, 16) or 1
    _int(body, "logprobs", 0, 5)
    echo = body.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise _bad("echo", "expected true or false.")
    max_t = _max_tokens(body, ("max_tokens",), default_max, cap)
    return ParsedRequest(body, model, tokens, max_t * max(n, best_of) * prompts, stream, include)


def validate_embedding(body: dict[str, Any]) -> ParsedRequest:
    """Check an embeddings request; nothing is generated, so only the input is reserved."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "a model name (string) is required; list them with GET /v1/models.")
    if "input" not in body:
        raise _bad("input", "an input (string, strings or token arrays) is required.")
    tokens = _prompt_tokens(body["input"], "input")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise _bad("encoding_format", "expected 'float' or 'base64'.")
    _int(body, "dimensions", 1, 65536)
    return ParsedRequest(body, model, tokens, 0, False, False)
