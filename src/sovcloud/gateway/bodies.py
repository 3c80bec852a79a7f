"""The JSON bodies of the API as pydantic types: one contract for the checks and the OpenAPI document.

The request models (:class:`ChatCompletionRequest` with multimodal content parts, :class:`CompletionRequest`,
:class:`EmbeddingRequest`, and :class:`ResponsesRequest`, translated to a chat request) validate every request
(:mod:`sovcloud.gateway.api`; :mod:`sovcloud.gateway.refusal` turns their first error into an OpenAI-style 400)
and their JSON schemas are the request schemas of ``GET /openapi.json`` (:mod:`sovcloud.gateway.schema`), so the
two cannot disagree. Only the declared fields
are checked; fields not declared pass through to the upstream untouched (the gateway forwards the JSON object
it received, not a model dump), since vLLM and SGLang accept many extensions. Inside a request, messages,
content parts and stream options are TypedDicts checked by the same validator: no object is built per
message. The response shapes at the end are documentation of what the upstream answers (relayed as they
are) and the type of the gateway's own error bodies.

Checks are strict: no coercion of strings to numbers or of numbers to booleans. The one leniency is that an
integer may be sent as a float without a fraction (``5.0``), which JSON does not tell apart.

Unions whose branches a value's shape decides (a message by its role, a content by string or list, a content
part by its ``type``, a prompt by its first element) are tagged unions: only the chosen branch is checked,
so an error names the field that is wrong (``messages[1].content[0].text``) and a long token array is checked
once. The branch names they put in an error's location are :data:`TAGS`; they never appear in a parameter.

``max_tokens`` has a per-gateway upper bound (``limits.max_tokens_cap``): :func:`capped` makes the request
models of one cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, create_model, with_config
from typing_extensions import TypedDict  # pydantic reads TypedDicts from here before Python 3.12

__all__ = [
    "ASSISTANT_ROLES",
    "KNOWN_PARTS",
    "TAGS",
    "USER_ROLES",
    "AssistantMessage",
    "AudioPart",
    "ChatCompletion",
    "ChatCompletionRequest",
    "CompletionRequest",
    "Content",
    "ContentPart",
    "Embedding",
    "EmbeddingRequest",
    "Error",
    "ErrorObject",
    "ImagePart",
    "ImageUrl",
    "InputAudio",
    "InputMessage",
    "InputTextPart",
    "Message",
    "ModelCard",
    "ModelList",
    "OneChoice",
    "OtherPart",
    "Prompt",
    "RequestModels",
    "ResponseObject",
    "ResponsesRequest",
    "StreamOptions",
    "TextPart",
    "Usage",
    "UserMessage",
    "capped",
]

USER_ROLES = ("system", "user", "developer")  # content required
ASSISTANT_ROLES = ("assistant", "tool", "function")  # content may be null or left out
KNOWN_PARTS = ("text", "image_url", "input_audio")
# the branch names a tagged union puts in an error's location: a message's role, and the tags given below
TAGS = frozenset({*USER_ROLES, *ASSISTANT_ROLES, "string-content", "parts-content", "text-part", "image-part",
                  "audio-part", "other-part", "string-prompt", "strings-prompt", "tokens-prompt", "token-lists-prompt",
                  "string-input", "items-input"})
_STRICT = ConfigDict(strict=True, extra="ignore")


def _integral(value: Any) -> Any:
    """A float without a fraction as the integer it is (JSON does not tell 5 and 5.0 apart)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1), BeforeValidator(_integral)]
Choices = Annotated[int, Field(ge=1, le=16), BeforeValidator(_integral)]  # best_of
# n: only one choice per request is served (an upstream's n > 1 answer is not metered per choice)
OneChoice = Annotated[int, Field(ge=1, le=1, description="only 1 is served"), BeforeValidator(_integral)]
Logprobs = Annotated[int, Field(ge=0, le=5), BeforeValidator(_integral)]
Dimensions = Annotated[int, Field(ge=1, le=65536), BeforeValidator(_integral)]
MaxTokens = Annotated[int, Field(ge=1), BeforeValidator(_integral)]  # at most the gateway's cap: see capped()
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]


# ---- content parts and messages: TypedDicts, validated without an object per message -----------------------
@with_config(_STRICT)
class TextPart(TypedDict):
    type: Literal["text"]
    text: str


@with_config(_STRICT)
class ImageUrl(TypedDict):
    url: Annotated[str, Field(description="https://... or data:image/...")]


@with_config(_STRICT)
class ImagePart(TypedDict):
    type: Literal["image_url"]
    image_url: str | ImageUrl


@with_config(_STRICT)
class InputAudio(TypedDict):
    data: Annotated[str, Field(description="base64")]
    format: NotRequired[str | None]


@with_config(_STRICT)
class AudioPart(TypedDict):
    type: Literal["input_audio"]
    input_audio: InputAudio


@with_config(_STRICT)
class OtherPart(TypedDict):
    """video_url, audio_url, file...: passed through."""

    type: Annotated[str, Field(json_schema_extra={"not": {"enum": list(KNOWN_PARTS)}})]


def _part_kind(part: Any) -> str | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str):
        return None  # not an object with a string type
    return {"text": "text-part", "image_url": "image-part", "input_audio": "audio-part"}.get(kind, "other-part")


ContentPart = Annotated[Annotated[TextPart, Tag("text-part")] | Annotated[ImagePart, Tag("image-part")]
                        | Annotated[AudioPart, Tag("audio-part")] | Annotated[OtherPart, Tag("other-part")],
                        Discriminator(_part_kind)]


def _content_kind(content: Any) -> str | None:
    return "string-content" if isinstance(content, str) else "parts-content" if isinstance(content, list) else None


Content = Annotated[Annotated[str, Tag("string-content")] | Annotated[list[ContentPart], Tag("parts-content")],
                    Discriminator(_content_kind)]


@with_config(_STRICT)
class UserMessage(TypedDict):
    role: Literal["system", "user", "developer"]
    content: Content


@with_config(_STRICT)
class AssistantMessage(TypedDict):
    role: Literal["assistant", "tool", "function"]
    content: NotRequired[Content | None]


Message = Annotated[UserMessage | AssistantMessage, Field(discriminator="role")]


# ---- prompts (completions, embeddings) ------------------------------------------------------------------
def _prompt_kind(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return "string-prompt"
    if not isinstance(prompt, list):
        return None
    first = prompt[0] if prompt else ""
    return "token-lists-prompt" if isinstance(first, list) else "tokens-prompt" if isinstance(first, int) \
        and not isinstance(first, bool) else "strings-prompt"


Prompt = Annotated[Annotated[str, Tag("string-prompt")]
                   | Annotated[list[str], Field(min_length=1), Tag("strings-prompt")]
                   | Annotated[list[TokenId], Field(min_length=1), Tag("tokens-prompt")]
                   | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1),
                               Tag("token-lists-prompt")],
                   Discriminator(_prompt_kind)]


# ---- the request bodies ---------------------------------------------------------------------------------
@with_config(_STRICT)
class StreamOptions(TypedDict):
    include_usage: NotRequired[bool | None]


class _Body(BaseModel):
    """Strict types; fields not declared are ignored here and forwarded as sent."""

    model_config = _STRICT


class _Generating(_Body):
    """The fields every generating endpoint shares, in the order they are checked (the first error is reported)."""

    model: str = Field(min_length=1, description="a model id from GET /v1/models")
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Seed | None = None
    n: OneChoice | None = None


class ChatCompletionRequest(_Generating):
    messages: list[Message] = Field(min_length=1)
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None


class CompletionRequest(_Generating):
    prompt: Prompt
    best_of: Choices | None = None
    logprobs: Logprobs | None = None
    echo: bool | None = None
    max_tokens: MaxTokens | None = None


class EmbeddingRequest(_Body):
    model: str = Field(min_length=1, description="a model id from GET /v1/models")
    input: Prompt
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Dimensions | None = None


# ---- the Responses API (POST /v1/responses), served as a chat completion -----------------------------------
@with_config(_STRICT)
class InputTextPart(TypedDict):
    """Text of an input message (``output_text``: an earlier answer sent back as context)."""

    type: Literal["input_text", "output_text"]
    text: str


InputContent = Annotated[Annotated[str, Tag("string-content")]
                         | Annotated[list[InputTextPart], Tag("parts-content")], Discriminator(_content_kind)]


@with_config(_STRICT)
class InputMessage(TypedDict):
    type: NotRequired[Literal["message"]]
    role: Literal["user", "system", "developer", "assistant"]
    content: InputContent


def _input_kind(value: Any) -> str | None:
    return "string-input" if isinstance(value, str) else "items-input" if isinstance(value, list) else None


ResponsesInput = Annotated[Annotated[str, Tag("string-input")]
                           | Annotated[list[InputMessage], Field(min_length=1), Tag("items-input")],
                           Discriminator(_input_kind)]


class ResponsesRequest(_Body):
    """The Responses API fields served; each maps onto a chat completion field (``instructions``: a system
    message first, ``max_output_tokens``: ``max_tokens``). Fields that need server-side state or tools are
    refused before this model is checked (:mod:`sovcloud.gateway.responses`)."""

    model: str = Field(min_length=1, description="a model id from GET /v1/models")
    input: ResponsesInput
    instructions: str | None = None
    stream: bool | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_output_tokens: MaxTokens | None = None


@dataclass(frozen=True)
class RequestModels:
    """The request models of one gateway (``max_tokens`` bounded by its cap)."""

    chat: type[ChatCompletionRequest]
    completion: type[CompletionRequest]
    embedding: type[EmbeddingRequest]
    responses: type[ResponsesRequest]


def capped(cap: int) -> RequestModels:
    """The request models whose ``max_tokens`` (and ``max_completion_tokens``, ``max_output_tokens``) are at
    most ``cap``.

    Subclasses of the same name that redefine only those fields, so the fields keep their order."""
    bound: Any = (Annotated[int, Field(ge=1, le=cap), BeforeValidator(_integral)] | None, None)
    chat = create_model("ChatCompletionRequest", __base__=ChatCompletionRequest, __module__=__name__,
                        max_tokens=bound, max_completion_tokens=bound)
    completion = create_model("CompletionRequest", __base__=CompletionRequest, __module__=__name__, max_tokens=bound)
    responses = create_model("ResponsesRequest", __base__=ResponsesRequest, __module__=__name__,
                             max_output_tokens=bound)
    return RequestModels(chat, completion, EmbeddingRequest, responses)


# ---- response bodies (documented in the OpenAPI document; the gateway relays the upstream's as they are) -----
class Usage(TypedDict, total=False):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ErrorObject(TypedDict):
    message: str
    type: str
    param: NotRequired[str | None]
    code: NotRequired[str | None]


class Error(TypedDict):
    """The OpenAI error object: every refusal of the gateway, and every upstream refusal it passes on."""

    error: ErrorObject


class ChatCompletion(TypedDict):
    id: NotRequired[str]
    object: NotRequired[str]
    model: NotRequired[str]
    choices: list[dict[str, Any]]
    usage: NotRequired[Usage]


class Embedding(TypedDict):
    object: NotRequired[str]
    data: list[dict[str, Any]]
    usage: NotRequired[Usage]


class ResponseObject(TypedDict):
    """The Responses API's Response object (``POST /v1/responses``), written by the gateway from the chat answer."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    model: str
    output: list[dict[str, Any]]
    usage: NotRequired[dict[str, Any] | None]
    error: NotRequired[dict[str, Any] | None]
    incomplete_details: NotRequired[dict[str, Any] | None]


class ModelCard(TypedDict):
    """OpenAI's model object (``GET /v1/models/{model}``, and each entry of the list)."""

    id: str
    object: str
    created: NotRequired[int]
    owned_by: NotRequired[str]
    sovcloud_regions: NotRequired[list[str]]  # the sites the tenant's data may go to for this model


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[ModelCard]
