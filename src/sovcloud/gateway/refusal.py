"""A request model's validation error as the OpenAI-style 400 the gateway answers.

Only the first error is reported (the models declare their fields in the order they are best fixed:
``model`` first, ``max_tokens`` last). Its location becomes ``param``, a path such as
``messages[0].content[1].text``: union tags (:data:`sovcloud.gateway.bodies.TAGS`) are left out, and the
fields whose values are a small list or object of their own (``stop``, ``prompt``, ``input``, ``image_url``,
``input_audio``) are named as a whole. The message says what the field expects: for booleans, numbers,
integers and enums it is written from the field's JSON schema (so the bounds stated are the bounds checked),
for the rest it is a hint per field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sovcloud.errors import ApiError
from sovcloud.gateway.bodies import ASSISTANT_ROLES, TAGS, USER_ROLES

__all__ = ["Refusals"]

ROLES = ", ".join(sorted(USER_ROLES + ASSISTANT_ROLES))
_WHOLE = frozenset({"stop", "prompt", "input", "image_url", "input_audio"})  # named as one parameter
_PROMPT = "expected a string, a non-empty list of strings, a token array or a list of token arrays."
_HINTS = {  # per field, list indices written as []
    "model": "a model name (string) is required; list them with GET /v1/models.",
    "n": "only n=1 is served (one choice per request); send the request again for more choices.",
    "stream_options": "expected an object such as {\"include_usage\": true}.",
    "stream_options.include_usage": "expected true or false.",
    "stop": "expected a string or a list of up to 4 strings.",
    "messages": "a non-empty list of {\"role\", \"content\"} objects is required.",
    "messages[]": "each message must be an object with 'role' and 'content'.",
    "messages[].content": "expected a string or a list of content parts.",
    "messages[].content[]": "each content part must be an object with a string 'type'.",
    "messages[].content[].text": "a text part needs a string 'text'.",
    "messages[].content[].image_url": "expected {\"url\": \"https://... or data:image/...\"}.",
    "messages[].content[].input_audio": "expected {\"data\": \"<base64>\", \"format\": \"wav\"}.",
    "prompt": _PROMPT,
    "input": _PROMPT,
}
_REQUIRED = {"prompt": "a prompt (string, strings or token arrays) is required.",
             "input": "an input (string, strings or token arrays) is required."}
_NO_ROLE = frozenset({"union_tag_invalid", "union_tag_not_found"})
_RANGE = frozenset({"greater_than_equal", "less_than_equal"})
Explain = Callable[[ErrorDetails], str]


def _where(loc: tuple[int | str, ...]) -> tuple[str, str]:
    """(param, field): ``messages[0].content[1].text`` and ``messages[].content[].text``."""
    param, field = "", ""
    for x in loc:
        if isinstance(x, int):
            param, field = f"{param}[{x}]", f"{field}[]"
        elif x not in TAGS:
            param, field = (f"{param}.{x}", f"{field}.{x}") if param else (x, x)
            if x in _WHOLE:
                break
    return param, field


def _scalar(prop: dict[str, Any]) -> Explain | None:
    """How to explain an error of a top-level field from its JSON schema (None: not a scalar)."""
    branches = [s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"]
    s = branches[0] if len(branches) == 1 else {}
    if "enum" in s:
        text = f"expected {' or '.join(repr(v) for v in s['enum'])}."
        return lambda err: text
    kind, lo, hi = s.get("type"), s.get("minimum"), s.get("maximum")
    if kind == "boolean":
        return lambda err: "expected true or false."
    if kind == "number":
        return lambda err: f"expected a number from {lo:g} to {hi:g}."
    if kind == "integer":
        def explain(err: ErrorDetails) -> str:
            v = err["input"]
            if err["type"] in _RANGE:
                return f"{v:g} is out of range; give an integer from {lo} to {hi}."
            return f"expected an integer (got {orjson.dumps(v).decode()[:40]})."
        return explain
    return None


class Refusals:
    """The 400 for a validation error of one request model."""

    def __init__(self, model: type[BaseModel]) -> None:
        props = model.model_json_schema()["properties"]
        self._scalars = {name: e for name, prop in props.items() if (e := _scalar(prop)) is not None}

    def __call__(self, exc: ValidationError) -> ApiError:
        err = exc.errors(include_url=False)[0]
        param, field = _where(err["loc"])
        if err["type"] in _NO_ROLE and field == "messages[]":  # a message without a role any branch takes
            role = err["input"].get("role") if isinstance(err["input"], dict) else None
            param, text = f"{param}.role", f"expected one of {ROLES} (got {str(role)[:40]!r})."
        elif err["type"] == "missing" and field in _REQUIRED:
            text = _REQUIRED[field]
        elif field in _HINTS:
            text = _HINTS[field]
        elif field in self._scalars:
            text = self._scalars[field](err)
        else:
            text = f"{err['msg']}."
        return ApiError(400, f"Invalid '{param}': {text}", param=param)
