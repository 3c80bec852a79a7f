"""The Files and Batch endpoints of the gateway (OpenAI's shapes), over :mod:`~sovcloud.gateway.files` and
:mod:`~sovcloud.gateway.batches`.

    POST   /v1/files                    multipart upload (``file``, ``purpose``) -> File object
    GET    /v1/files                    the tenant's files (``?purpose=``)
    GET    /v1/files/{file_id}          File object
    GET    /v1/files/{file_id}/content  the bytes
    DELETE /v1/files/{file_id}
    POST   /v1/batches                  ``{"input_file_id", "endpoint", "completion_window": "24h", "metadata"}``
    GET    /v1/batches                  the tenant's batches, newest first (``?limit=&after=``)
    GET    /v1/batches/{batch_id}
    POST   /v1/batches/{batch_id}/cancel

Every endpoint authenticates like the generating ones; a tenant sees only its own files and batches.
Multipart parsing needs ``python-multipart`` (a dependency of the gateway).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sovcloud.errors import ApiError, LedgerError, UnknownEntity
from sovcloud.gateway.api import api_error_body
from sovcloud.gateway.batches import BatchRunner
from sovcloud.gateway.files import FileStore
from sovcloud.gateway.handler import Gateway, Validator
from sovcloud.metering.db import LedgerDB
from sovcloud.metering.ledger import default_ledger_url
from sovcloud.metering.tenants import Tenant

__all__ = ["BatchApi", "default_batch_dir"]


def default_batch_dir(ledger_url: str) -> Path:
    """Beside an SQLite ledger (``<file>.batches``), else ``~/.sovcloud/batches``."""
    db = LedgerDB.parse(ledger_url)
    return Path(db.target + ".batches") if db.kind == "sqlite" and ":memory:" not in db.target \
        else Path.home() / ".sovcloud" / "batches"


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


class BatchApi:
    """The endpoints of one gateway's files and batches."""

    def __init__(self, gw: Gateway, hot: dict[str, tuple[str, str, Validator]]) -> None:
        cfg = gw.cfg.batch
        folder = Path(cfg.folder) if cfg.folder else default_batch_dir(gw.cfg.ledger or default_ledger_url())
        self.gw, self.hot = gw, hot
        self.files = FileStore(folder, cfg.max_file_bytes)
        self.runner = BatchRunner(self.files, self._line, self._tenant, concurrency=cfg.concurrency,
                                  max_lines=cfg.max_lines)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self._guard(self.upload), methods=["POST"]),
            Route("/v1/files", self._guard(self.list_files), methods=["GET"]),
            Route("/v1/files/{file_id}", self._guard(self.file), methods=["GET"]),
            Route("/v1/files/{file_id}", self._guard(self.delete_file), methods=["DELETE"]),
            Route("/v1/files/{file_id}/content", self._guard(self.content), methods=["GET"]),
            Route("/v1/batches", self._guard(self.create), methods=["POST"]),
            Route("/v1/batches", self._guard(self.list_batches), methods=["GET"]),
            Route("/v1/batches/{batch_id}", self._guard(self.batch), methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self._guard(self.cancel), methods=["POST"]),
        ]

    def _guard(self, fn: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                tenant = self.gw.admission.authenticate(request.headers.get("authorization"))
                out: Response = await fn(request, tenant)
                return out
            except ApiError as exc:
                return Response(api_error_body(exc), exc.status, headers=exc.headers, media_type="application/json")
        return endpoint

    # ---- lines and tenants for the runner ---------------------------------------------------------
    async def _line(self, tenant: Tenant, body: dict[str, Any], endpoint: str) -> tuple[int, bytes, str, float]:
        name, path, validate = self.hot[endpoint]
        resp = await self.gw.batch_line(tenant, body, name, path, validate)
        headers = dict(resp.raw_headers)
        retry = headers.get(b"retry-after", b"0").decode()
        return resp.status_code, bytes(resp.body), headers.get(b"x-sovcloud-request-id", b"").decode(), \
            float(retry) if re.fullmatch(r"\d+(\.\d+)?", retry) else 0.0

    def _tenant(self, tenant_id: str) -> Tenant | None:
        try:
            return self.gw.parts.tenants.get(tenant_id)
        except (UnknownEntity, LedgerError):
            return None

    # ---- files -----------------------------------------------------------------------------------
    async def upload(self, request: Request, tenant: Tenant) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.files.max_bytes + 64 * 1024:  # before reading any of it
            raise ApiError(413, f"The upload is {int(length):,} bytes; files may have {self.files.max_bytes:,} "
                                "(batch.max_file_bytes).", param="file", code="file_too_large")
        try:
            form = await request.form(max_part_size=self.files.max_bytes)
        except Exception as exc:  # multipart errors of every kind: the client sent a malformed upload
            raise ApiError(400, f"The upload is not valid multipart/form-data ({exc}); send 'file' and 'purpose' "
                                "fields.", code="invalid_upload") from None
        try:
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "The upload has no 'file' part; send the JSONL file as 'file'.", param="file",
                               code="missing_file")
            if not isinstance(purpose, str):
                raise ApiError(400, "The upload has no 'purpose'; send purpose=batch for batch input.",
                               param="purpose", code="missing_purpose")
            if upload.size is not None and upload.size > self.files.max_bytes:
                raise ApiError(413, f"The file is {upload.size:,} bytes; the limit is {self.files.max_bytes:,} bytes "
                                    "(batch.max_file_bytes).", param="file", code="file_too_large")
            data = await upload.read()
            name = upload.filename or "upload.jsonl"
        finally:
            await form.close()  # the spooled temporary files of the parts
        return _json(self.files.put(tenant.id, data, name, purpose).to_json())

    async def list_files(self, request: Request, tenant: Tenant) -> Response:
        files = self.files.list(tenant.id, request.query_params.get("purpose"))
        return _json({"object": "list", "data": [f.to_json() for f in files], "has_more": False})

    async def file(self, request: Request, tenant: Tenant) -> Response:
        return _json(self.files.get(tenant.id, request.path_params["file_id"]).to_json())

    async def delete_file(self, request: Request, tenant: Tenant) -> Response:
        fid = request.path_params["file_id"]
        self.files.delete(tenant.id, fid)
        return _json({"id": fid, "object": "file", "deleted": True})

    async def content(self, request: Request, tenant: Tenant) -> Response:
        data = self.files.content(tenant.id, request.path_params["file_id"])
        return Response(data, media_type="application/octet-stream")

    # ---- batches ---------------------------------------------------------------------------------
    async def create(self, request: Request, tenant: Tenant) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("input_file_id"), str):
            raise ApiError(400, "Send a JSON object with input_file_id, endpoint and completion_window.",
                           param="input_file_id", code="invalid_request")
        meta = body.get("metadata")
        if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
            raise ApiError(400, "metadata must be an object of strings.", param="metadata", code="invalid_metadata")
        return _json(self.runner.create(tenant, body["input_file_id"], str(body.get("endpoint")),
                                        str(body.get("completion_window", "24h")), meta))

    async def list_batches(self, request: Request, tenant: Tenant) -> Response:
        batches = self.runner.list(tenant.id)
        after = request.query_params.get("after")
        if after:
            ids = [b["id"] for b in batches]
            batches = batches[ids.index(after) + 1:] if after in ids else []
        limit = int(request.query_params.get("limit", "20")) if request.query_params.get("limit", "20").isdigit() \
            else 20
        page = [{k: v for k, v in b.items() if k != "tenant"} for b in batches[:limit]]
        return _json({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                      "last_id": page[-1]["id"] if page else None, "has_more": len(batches) > limit})

    async def batch(self, request: Request, tenant: Tenant) -> Response:
        found = self.runner.get(tenant.id, request.path_params["batch_id"])
        return _json({k: v for k, v in found.items() if k != "tenant"})

    async def cancel(self, request: Request, tenant: Tenant) -> Response:
        return _json(self.runner.cancel(tenant, request.path_params["batch_id"]))
