"""The gateway's OpenAPI 3.0 schema (served at ``GET /openapi.json``).

Every constraint declared here is enforced by :mod:`sovcloud.gatewayapi` (a schemathesis run in the tests
checks that the two agree); fields not declared pass through to the upstream. Responses declare the
OpenAI error object for every refusal and the ``x-sovcloud-*`` audit headers for every routed answer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_schema"]

INT64 = {"minimum": -(2**63), "maximum": 2**63 - 1}
TOKEN_ID = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _number(lo: float, hi: float) -> dict[str, Any]:
    return _nullable({"type": "number", "minimum": lo, "maximum": hi})


def _int(lo: int, hi: int) -> dict[str, Any]:
    return _nullable({"type": "integer", "minimum": lo, "maximum": hi})


def _parts() -> dict[str, Any]:
    text = {"type": "object", "required": ["type", "text"],
            "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}}
    image = {"type": "object", "required": ["type", "image_url"], "properties": {
        "type": {"type": "string", "enum": ["image_url"]},
        "image_url": {"oneOf": [{"type": "string"}, {"type": "object", "required": ["url"],
                                                     "properties": {"url": {"type": "string"}}}]}}}
    audio = {"type": "object", "required": ["type", "input_audio"], "properties": {
        "type": {"type": "string", "enum": ["input_audio"]},
        "input_audio": {"type": "object", "required": ["data"],
                        "properties": {"data": {"type": "string", "description": "base64"},
                                       "format": {"type": "string"}}}}}
    other = {"type": "object", "required": ["type"], "description": "video_url, audio_url, file...: passed through",
             "properties": {"type": {"type": "string", "not": {"enum": ["text", "image_url", "input_audio"]}}}}
    return {"type": "array", "items": {"oneOf": [text, image, audio, other]}}


def _common(cap: int) -> dict[str, Any]:
    return {
        "model": {"type": "string", "minLength": 1, "description": "a model id from GET /v1/models"},
        "stream": _nullable({"type": "boolean"}),
        "stream_options": _nullable({"type": "object",
                                     "properties": {"include_usage": _nullable({"type": "boolean"})}}),
        "max_tokens": _int(1, cap),
        "n": _int(1, 16),
        "temperature": _number(0, 2),
        "top_p": _number(0, 1),
        "presence_penalty": _number(-2, 2),
        "frequency_penalty": _number(-2, 2),
        "stop": _nullable({"oneOf": [{"type": "string"},
                                     {"type": "array", "maxItems": 4, "items": {"type": "string"}}]}),
        "seed": _nullable({"type": "integer", **INT64}),
    }


def _prompt() -> dict[str, Any]:
    return {"oneOf": [
        {"type": "string"},
        {"type": "array", "minItems": 1, "items": {"type": "string"}},
        {"type": "array", "minItems": 1, "items": TOKEN_ID},
        {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": TOKEN_ID}},
    ]}


def _requests(cap: int) -> dict[str, Any]:
    content = {"oneOf": [{"type": "string"}, _parts()]}
    user = {"type": "object", "required": ["role", "content"], "properties": {
        "role": {"type": "string", "enum": ["system", "user", "developer"]}, "content": content}}
    assistant = {"type": "object", "required": ["role"], "properties": {
        "role": {"type": "string", "enum": ["assistant", "tool", "function"]}, "content": _nullable(content)}}
    chat = {"type": "object", "required": ["model", "messages"], "properties": {
        **_common(cap), "max_completion_tokens": _int(1, cap),
        "messages": {"type": "array", "minItems": 1, "items": {"oneOf": [user, assistant]}}}}
    completion = {"type": "object", "required": ["model", "prompt"], "properties": {
        **_common(cap), "prompt": _prompt(), "best_of": _int(1, 16), "logprobs": _int(0, 5),
        "echo": _nullable({"type": "boolean"})}}
    embedding = {"type": "object", "required": ["model", "input"], "properties": {
        "model": {"type": "string", "minLength": 1}, "input": _prompt(),
        "encoding_format": _nullable({"type": "string", "enum": ["float", "base64"]}),
        "dimensions": _int(1, 65536)}}
    return {"ChatCompletionRequest": chat, "CompletionRequest": completion, "EmbeddingRequest": embedding}


def _responses() -> dict[str, Any]:
    usage = {"type": "object", "properties": {"prompt_tokens": {"type": "integer"},
                                              "completion_tokens": {"type": "integer"},
                                              "total_tokens": {"type": "integer"}}}
    error = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": _nullable({"type": "string"}), "code": _nullable({"type": "string"})}}}}
    return {
        "Usage": usage,
        "Error": error,
        "ChatCompletion": {"type": "object", "required": ["choices"], "properties": {
            "id": {"type": "string"}, "object": {"type": "string"}, "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"$ref": "#/components/schemas/Usage"}}},
        "Embedding": {"type": "object", "required": ["data"], "properties": {
            "object": {"type": "string"}, "data": {"type": "array", "items": {"type": "object"}},
            "usage": {"$ref": "#/components/schemas/Usage"}}},
        "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"type": "object", "required": ["id", "object"], "properties": {
                "id": {"type": "string"}, "object": {"type": "string"}, "owned_by": {"type": "string"}}}}}},
    }


_REFUSALS = {
    "400": "malformed JSON, invalid UTF-8, a wrong type or value (param names it)",
    "401": "missing or wrong API key (code invalid_api_key)",
    "402": "grants and credits cannot cover prompt + max_tokens (code insufficient_quota)",
    "403": "model not allowed for the tenant (code model_not_allowed)",
    "404": "unknown model (code model_not_found)",
    "413": "body larger than limits.max_body_bytes (code body_too_large)",
    "429": "tenant RPM/TPM limit (code rate_limit_exceeded)",
    "500": "gateway bug (code internal_error); nothing charged",
    "502": "every attempt failed upstream (code upstream_error)",
    "503": "no compliant backend: code residency | unhealthy | saturated | no_backend; or ledger_unavailable",
}


def _error(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _generate(request: str, answer: str, streams: bool, zones: list[str]) -> dict[str, Any]:
    audit = {h: {"required": True, "schema": {"type": "string"}, "description": d} for h, d in (
        ("x-sovcloud-region", "site that served the request"), ("x-sovcloud-backend", "backend id site/model/chip"),
        ("x-sovcloud-policy", "origin zone, residency rule and decision"), ("x-sovcloud-request-id", "request id"))}
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{answer}"}}}
    if streams:
        content["text/event-stream"] = {"schema": {  # OpenAPI < 3.2: the schema of each event
            "type": "object", "required": ["data"], "properties": {
                "event": {"type": "string"},
                "data": {"type": "string", "description": "a JSON chunk (usage only with include_usage), "
                                                          "then [DONE]; a JSON error object if the stream fails"}}}}
    return {"post": {
        "security": [{"bearer": []}],
        "parameters": [{"name": "x-sovcloud-client-zone", "in": "header", "required": False,
                        "description": "the client's zone for latency (default: the tenant's data origin)",
                        "schema": {"type": "string", "enum": zones}}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{request}"}}}},
        "responses": {"200": {"description": "the upstream's answer", "headers": audit, "content": content},
                      **{code: _error(desc) for code, desc in _REFUSALS.items()}},
    }}


def openapi_schema(zones: list[str], max_tokens_cap: int) -> dict[str, Any]:
    """The OpenAPI document of a gateway whose scenario has ``zones`` and whose max_tokens cap is given."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "sovcloud gateway", "version": "1",
                 "description": "OpenAI-compatible inference gateway with residency as a hard guarantee"},
        "paths": {
            "/v1/chat/completions": _generate("ChatCompletionRequest", "ChatCompletion", True, zones),
            "/v1/completions": _generate("CompletionRequest", "ChatCompletion", True, zones),
            "/v1/embeddings": _generate("EmbeddingRequest", "Embedding", False, zones),
            "/v1/models": {"get": {"security": [{"bearer": []}], "responses": {
                "200": {"description": "models the tenant may use",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}}},
                "401": _error(_REFUSALS["401"])}}},
            "/health": {"get": {"responses": {"200": {"description": "alive", "content": {
                "application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus metrics", "content": {
                "text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**_requests(max_tokens_cap), **_responses()},
        },
    }
