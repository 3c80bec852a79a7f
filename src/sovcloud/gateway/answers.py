"""Small pieces of the gateway's answers: a prebuilt HTTP response, header bytes, a background mark's callback."""

from __future__ import annotations

import asyncio

from starlette.responses import Response

__all__ = ["ascii_bytes", "raw_response", "retrieve"]


def ascii_bytes(s: str) -> bytes:
    """``s`` as header bytes (non-ASCII characters replaced)."""
    return s.encode("ascii", "replace")


def retrieve(task: asyncio.Future[None]) -> None:
    """Done-callback of the early progress mark: its error (if any) resurfaces at the stream's own progress call."""
    if not task.cancelled():
        task.exception()


def raw_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
    """A response with its headers already encoded (no re-encoding on the hot path)."""
    resp = Response.__new__(Response)
    resp.status_code, resp.body, resp.background = status, body, None
    resp.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]
    return resp
