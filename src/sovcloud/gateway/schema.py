"""The gateway's OpenAPI 3.0 document (served at ``GET /openapi.json``), written from the body models.

``components/schemas`` holds the JSON schemas of :mod:`sovcloud.gateway.bodies`: the request models (the
ones that validate every request, with this gateway's ``max_tokens`` cap) and the response shapes, each
referenced from the paths. Fields not declared pass through to the upstream. Every refusal answers with
the OpenAI error object (``Error``), every routed answer carries the ``x-sovcloud-*`` audit headers (and, for a
tenant with limits, the ``x-ratelimit-*`` ones), and the client's zone may be given in the
``x-sovcloud-client-zone`` header.

pydantic writes JSON Schema 2020-12; :class:`OpenApi30` writes the OpenAPI 3.0 dialect of it instead:
``nullable: true`` for a null branch, ``enum`` for a constant, and no titles on fields.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from sovcloud.gateway.bodies import (
    ChatCompletion,
    Embedding,
    Error,
    ModelCard,
    ModelList,
    RequestModels,
    ResponseObject,
)

__all__ = ["OpenApi30", "components", "openapi_schema"]

REF = "#/components/schemas/{model}"


class OpenApi30(GenerateJsonSchema):
    """JSON schemas in OpenAPI 3.0's dialect (no ``type: null``, no ``const``, no field titles)."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        if "$ref" in inner:  # siblings of a $ref are ignored in 3.0
            return {"allOf": [inner], "nullable": True}
        return {**inner, "nullable": True}

    def literal_schema(self, schema: core_schema.LiteralSchema) -> JsonSchemaValue:
        out = super().literal_schema(schema)
        if "const" in out:
            out["enum"] = [out.pop("const")]
        return out

    def field_title_should_be_set(self, schema: CoreSchema | Any) -> bool:
        return False


def components(models: RequestModels) -> dict[str, Any]:
    """``components/schemas``: the request models and the response shapes, each with what it refers to."""
    out: dict[str, Any] = {}
    schemas = [(m.__name__, m.model_json_schema(ref_template=REF, schema_generator=OpenApi30))
               for m in (models.chat, models.completion, models.embedding, models.responses)]
    schemas += [(t.__name__, TypeAdapter(t).json_schema(ref_template=REF, schema_generator=OpenApi30))
                for t in (Error, ChatCompletion, Embedding, ModelCard, ModelList, ResponseObject)]
    for name, schema in schemas:
        out.update(schema.pop("$defs", {}))
        out[name] = schema
    return out


_REFUSALS = {
    "400": "malformed JSON, invalid UTF-8, a wrong type or value (param names it), n > 1 (param n), or a request "
           "larger than the tenant's whole TPM (code request_too_large; not retryable)",
    "401": "missing or wrong API key (code invalid_api_key)",
    "402": "grants and credits cannot cover prompt + max_tokens (code insufficient_quota)",
    "403": "model not allowed for the tenant (code model_not_allowed)",
    "404": "unknown model, or one the tenant may not use on GET /v1/models/{model} (code model_not_found)",
    "413": "body larger than limits.max_body_bytes (code body_too_large)",
    "408": "body not received whole within limits.body_timeout_s (code request_timeout)",
    "429": "tenant RPM/TPM limit (code rate_limit_exceeded), with retry-after: the whole seconds until the request "
           "fits, and the x-ratelimit-* headers",
    "500": "gateway bug (code internal_error); nothing charged",
    "502": "every attempt failed upstream (code upstream_error)",
    "503": "no compliant backend: code residency | unhealthy | saturated | no_backend; or ledger_unavailable",
}


def _error(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}


def _generate(request: str, answer: str, streams: bool, zones: list[str]) -> dict[str, Any]:
    audit = {h: {"required": True, "schema": {"type": "string"}, "description": d} for h, d in (
        ("x-sovcloud-region", "site that served the request"), ("x-sovcloud-backend", "backend id site/model/chip"),
        ("x-sovcloud-policy", "origin zone, residency rule and decision"), ("x-sovcloud-request-id", "request id"))}
    audit.update({f"x-ratelimit-{h}": {"required": False, "schema": {"type": "string"}, "description": d} for h, d in (
        ("limit-requests", "the tenant's RPM"), ("limit-tokens", "the tenant's TPM"),
        ("remaining-requests", "whole requests left in the bucket"), ("remaining-tokens", "tokens left in the bucket"),
        ("reset-requests", "until the RPM bucket is full, e.g. 600ms, 6m0s"),
        ("reset-tokens", "until the TPM bucket is full"))})
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": REF.format(model=answer)}}}
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
            "schema": {"$ref": REF.format(model=request)}}}},
        "responses": {"200": {"description": "the upstream's answer", "headers": audit, "content": content},
                      **{code: _error(desc) for code, desc in _REFUSALS.items()}},
    }}


def _responses(request: str, zones: list[str]) -> dict[str, Any]:
    """``POST /v1/responses``: as a generating endpoint, with the Responses API's answer and events."""
    path = _generate(request, "ResponseObject", True, zones)
    ok = path["post"]["responses"]["200"]
    ok["description"] = "the upstream's chat answer as a Response object"
    ok["content"]["text/event-stream"]["schema"]["properties"]["data"]["description"] = (
        "a Responses event (response.created ... response.completed / response.incomplete, or error and "
        "response.failed when the stream breaks off) with its sequence_number; event names its type")
    path["post"]["responses"]["400"] = _error(_REFUSALS["400"] + "; a field the gateway does not serve, such as "
                                              "tools or previous_response_id (code unsupported_parameter)")
    return path


def openapi_schema(zones: list[str], models: RequestModels) -> dict[str, Any]:
    """The OpenAPI document of a gateway whose scenario has ``zones`` and whose requests ``models`` check."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "sovcloud gateway", "version": "1",
                 "description": "OpenAI-compatible inference gateway with residency as a hard guarantee"},
        "paths": {
            "/v1/chat/completions": _generate(models.chat.__name__, "ChatCompletion", True, zones),
            "/v1/completions": _generate(models.completion.__name__, "ChatCompletion", True, zones),
            "/v1/embeddings": _generate(models.embedding.__name__, "Embedding", False, zones),
            "/v1/responses": _responses(models.responses.__name__, zones),
            "/v1/models": {"get": {"security": [{"bearer": []}], "responses": {
                "200": {"description": "models the tenant may use",
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="ModelList")}}}},
                "401": _error(_REFUSALS["401"])}}},
            "/v1/models/{model}": {"get": {
                "security": [{"bearer": []}],
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"},
                                "description": "a model id from GET /v1/models (may contain '/')"}],
                "responses": {
                    "200": {"description": "the model object",
                            "content": {"application/json": {"schema": {"$ref": REF.format(model="ModelCard")}}}},
                    "401": _error(_REFUSALS["401"]),
                    "404": _error("model unknown, not served, or not allowed for the tenant (code model_not_found)")}}},
            "/health": {"get": {"responses": {"200": {"description": "alive", "content": {
                "application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus metrics", "content": {
                "text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": components(models),
        },
    }
