"""Audio pass-through for omni models: ``POST /v1/audio/speech`` and ``POST /v1/audio/transcriptions``.

Both go the way of every generating request (key, model, residency, rate limits, routing with failover,
reservation and settlement in the ledger) to a backend of the named model, which must offer the endpoint
(vLLM and the emulator do):

``speech``          JSON ``{"model", "input", "voice", ...}`` (``input`` at most 4,096 characters, as OpenAI's);
                    reserved and charged by the input's token estimate, no completion tokens (OpenAI prices tts-1
                    by input characters); the audio comes back as the upstream sends it, content type kept.
``transcriptions``  ``multipart/form-data`` with ``file`` and ``model`` (other fields passed on); at most
                    ``limits.max_upload_bytes`` (25 MiB). Reserved: 16 + ceil(audio bytes / 100) input tokens (the
                    gateway's estimate for audio parts) and ``limits.default_max_tokens`` for the text; settled on
                    the upstream's ``usage.input_tokens``/``output_tokens`` when it reports them, else on the
                    estimate and the transcript's tokens.
"""

from __future__ import annotations

import math

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sovcloud.errors import ApiError
from sovcloud.gateway.api import ParsedRequest, text_token_estimate
from sovcloud.gateway.handler import Gateway
from sovcloud.gateway.uploads import Upload

__all__ = ["SPEECH_MAX_CHARS", "AudioApi"]

SPEECH_MAX_CHARS = 4096
_WANTED = frozenset({b"x-sovcloud-client-zone"})


class AudioApi:
    """The two audio endpoints of one gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self) -> list[Route]:
        return [Route("/v1/audio/speech", self.speech, methods=["POST"]),
                Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"])]

    async def speech(self, request: Request) -> Response:
        gw = self.gw
        try:
            tenant = gw.admission.authenticate(request.headers.get("authorization"))
            raw = await request.body()
            if len(raw) > gw.cfg.limits.max_body_bytes:
                raise ApiError(413, f"The request body is {len(raw):,} bytes; the limit is "
                                    f"{gw.cfg.limits.max_body_bytes:,} bytes.", code="body_too_large")
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                raise ApiError(400, "The request body must be a JSON object with model, input and voice.",
                               code="invalid_json")
            for name in ("model", "input", "voice"):
                if not isinstance(body.get(name), str) or not body[name]:
                    raise ApiError(400, f"'{name}' is required and must be a non-empty string.", param=name)
            if len(body["input"]) > SPEECH_MAX_CHARS:
                raise ApiError(400, f"'input' has {len(body['input']):,} characters; at most {SPEECH_MAX_CHARS:,} "
                                    "are spoken in one request.", param="input", code="string_above_max_length")
            if body.get("stream") or body.get("stream_format") == "sse":
                raise ApiError(400, "Streamed speech is not supported; leave out stream and stream_format.",
                               param="stream_format")
        except ApiError as exc:
            return await gw.refuse(exc, "speech")
        req = ParsedRequest(body=body, model=body["model"], prompt_tokens=text_token_estimate(body["input"]),
                            max_tokens=0, stream=False, include_usage=False)
        return await gw.run_parsed(_headers(request), tenant, req, "speech", "/audio/speech")

    async def transcriptions(self, request: Request) -> Response:
        gw = self.gw
        limit = gw.cfg.limits.max_upload_bytes
        try:
            tenant = gw.admission.authenticate(request.headers.get("authorization"))
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit + 64 * 1024:
                raise ApiError(413, f"The upload is {int(length):,} bytes; the limit is {limit:,} bytes "
                                    "(limits.max_upload_bytes).", code="body_too_large")
            upload = await _read_upload(request, limit)
        except ApiError as exc:
            return await gw.refuse(exc, "transcriptions")
        fields = dict(upload.fields)
        req = ParsedRequest(body=fields, model=fields["model"], prompt_tokens=16 + math.ceil(len(upload.data) / 100),
                            max_tokens=gw.cfg.limits.default_max_tokens, stream=False, include_usage=False,
                            upload=upload)
        return await gw.run_parsed(_headers(request), tenant, req, "transcriptions", "/audio/transcriptions")


def _headers(request: Request) -> dict[bytes, bytes]:
    return {k: v for k, v in request.headers.raw if k in _WANTED}


async def _read_upload(request: Request, limit: int) -> Upload:
    """The file and text fields of a transcription upload (400 naming what is missing, 413 when too large)."""
    try:
        form = await request.form(max_part_size=limit)
    except Exception as exc:  # multipart errors of every kind: the client sent a malformed upload
        raise ApiError(400, f"The upload is not valid multipart/form-data ({exc}); send 'file' and 'model'.",
                       code="invalid_upload") from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise ApiError(400, "The upload has no 'file' part; send the audio as 'file'.", param="file")
        if file.size is not None and file.size > limit:
            raise ApiError(413, f"The audio is {file.size:,} bytes; the limit is {limit:,} bytes "
                                "(limits.max_upload_bytes).", param="file", code="body_too_large")
        fields = tuple((k, v) for k, v in form.multi_items() if isinstance(v, str))
        if not any(k == "model" and v for k, v in fields):
            raise ApiError(400, "'model' is required.", param="model")
        data = await file.read()
        return Upload(fields=fields, filename=file.filename or "audio", data=data,
                      content_type=file.content_type or "application/octet-stream")
    finally:
        await form.close()
