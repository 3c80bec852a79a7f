"""Uploaded files of the OpenAI Files API, kept per tenant in a folder (the Batch API's input and output).

Layout: ``<folder>/t<tenant id in hex>/<file id>`` holds the bytes and ``<file id>.json`` the File object
(``{"id", "object": "file", "bytes", "created_at", "filename", "purpose"}``). A tenant sees only its own
files: another tenant's id is a 404, as an unknown one is. Writes go to a temporary name first and are
renamed into place, so a crash never leaves half a file under a valid id.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sovcloud.errors import ApiError

__all__ = ["PURPOSES", "FileStore", "StoredFile", "tenant_dir", "write_durably"]

#: purposes a client may upload with (batch_output is the gateway's own)
PURPOSES = frozenset({"batch", "fine-tune", "assistants", "vision", "user_data", "evals"})
_ID = re.compile(r"^file-[0-9a-f]{24}$")


def tenant_dir(tenant: str) -> str:
    """The folder name of a tenant: its id in hex, so every id gets its own folder and none can leave the store."""
    return "t" + tenant.encode("utf-8").hex()


@dataclass(frozen=True)
class StoredFile:
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "status_details": None}


def _not_found(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", param="file_id", code="file_not_found",
                    type_="invalid_request_error")


class FileStore:
    """Files per tenant under one folder (module docstring); one per gateway."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes

    def _dir(self, tenant: str) -> Path:
        return self.folder / tenant_dir(tenant)

    def put(self, tenant: str, data: bytes, filename: str, purpose: str) -> StoredFile:
        """Keep ``data`` as a new file of ``tenant``."""
        if purpose not in PURPOSES and purpose != "batch_output":
            raise ApiError(400, f"purpose '{purpose}' is not one of {', '.join(sorted(PURPOSES))}; upload batch "
                                "input with purpose 'batch'.", param="purpose", code="invalid_purpose")
        if len(data) > self.max_bytes and purpose != "batch_output":  # the gateway's own results are never refused
            raise ApiError(413, f"The file is {len(data):,} bytes; the limit is {self.max_bytes:,} bytes "
                                "(batch.max_file_bytes).", param="file", code="file_too_large")
        f = StoredFile(id="file-" + secrets.token_hex(12), bytes=len(data), created_at=int(time.time()),
                       filename=filename or "upload.jsonl", purpose=purpose)
        d = self._dir(tenant)
        d.mkdir(parents=True, exist_ok=True)
        write_durably(d / f.id, data)
        write_durably(d / f"{f.id}.json", orjson.dumps(f.to_json()))
        return f

    def get(self, tenant: str, file_id: str) -> StoredFile:
        """The File object of ``tenant``'s ``file_id`` (404 when it has none by that id)."""
        path = self._dir(tenant) / f"{file_id}.json"
        if not _ID.match(file_id) or not path.exists():
            raise _not_found(file_id)
        data = orjson.loads(path.read_bytes())
        return StoredFile(id=data["id"], bytes=data["bytes"], created_at=data["created_at"],
                          filename=data["filename"], purpose=data["purpose"])

    def content(self, tenant: str, file_id: str) -> bytes:
        self.get(tenant, file_id)
        return (self._dir(tenant) / file_id).read_bytes()

    def path(self, tenant: str, file_id: str) -> Path:
        self.get(tenant, file_id)
        return self._dir(tenant) / file_id

    def list(self, tenant: str, purpose: str | None = None) -> list[StoredFile]:
        d = self._dir(tenant)
        if not d.exists():
            return []
        files = [self.get(tenant, p.name[:-5]) for p in d.glob("file-*.json")]
        return sorted((f for f in files if purpose is None or f.purpose == purpose), key=lambda f: (f.created_at, f.id))

    def delete(self, tenant: str, file_id: str) -> None:
        self.get(tenant, file_id)
        d = self._dir(tenant)
        (d / f"{file_id}.json").unlink()
        (d / file_id).unlink(missing_ok=True)


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name, fsync, and rename it into place."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
