"""A multipart upload passed through to an upstream (audio transcriptions): its fields, its file, re-encoded.

The gateway reads the client's ``multipart/form-data`` once (Starlette) and sends the upstream a fresh one with
the same fields and file, the ``model`` field set to the name the upstream serves, so a renamed model
(``upstreams.backends.*.model``) works for uploads as for JSON bodies.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

__all__ = ["Upload"]


def _quote(s: str) -> str:
    """A value for a quoted header parameter (RFC 7578: quotes and line breaks escaped or dropped)."""
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


@dataclass(frozen=True)
class Upload:
    """The parts of a multipart request: text fields, and one file."""

    fields: tuple[tuple[str, str], ...]
    filename: str
    data: bytes
    content_type: str

    def encode(self, model: str) -> tuple[bytes, str]:
        """The multipart body for the upstream (``model`` replaced) and its Content-Type with the boundary."""
        boundary = "sovcloud-" + secrets.token_hex(12)
        out: list[bytes] = []
        for name, value in self.fields:
            v = model if name == "model" else value
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n{v}\r\n'.encode())
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{_quote(self.filename)}"\r\n'
                f"Content-Type: {_quote(self.content_type)}\r\n\r\n")
        out.append(head.encode() + self.data + b"\r\n")
        out.append(f"--{boundary}--\r\n".encode())
        return b"".join(out), f"multipart/form-data; boundary={boundary}"
