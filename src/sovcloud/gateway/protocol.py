"""The gateway's HTTP/1.1 protocol: uvicorn's httptools protocol with two answers OpenAI clients expect.

- **Framing errors** (a request line or headers httptools cannot parse, a bad chunked body) get a 400 in
  OpenAI's error shape, ``{"error": {"message", "type": "invalid_request_error", "param": null, "code":
  "invalid_http"}}`` as ``application/json``, instead of uvicorn's plain-text "Invalid HTTP request received.".
- **A client that half-closes** its side after sending a whole request (``shutdown(SHUT_WR)``, as some HTTP
  tools and proxies do) still gets its answer: end of input no longer closes the connection; the response
  is written and the connection closes when the client's side is gone.

:func:`sovcloud.gateway.app.serve` runs uvicorn with ``http=GatewayProtocol``.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sovcloud.gateway.api import error_body

__all__ = ["FRAMING_ERROR", "GatewayProtocol"]

#: the body of a framing error's 400
FRAMING_ERROR = error_body("The HTTP request could not be parsed (request line, headers or chunked body); send a "
                           "well-formed HTTP/1.1 request.", "invalid_request_error", None, "invalid_http")


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with JSON framing errors and half-closed clients answered (module docstring)."""

    def eof_received(self) -> bool:  # type: ignore[override]
        return True  # keep the transport open for writing: the answer to the request already read still goes out

    def send_400_response(self, msg: str) -> None:
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n", b"content-length: ", str(len(FRAMING_ERROR)).encode(),
                 b"\r\n", b"connection: close\r\n", b"\r\n"]
        self.transport.write(b"".join(head) + FRAMING_ERROR)
        self.transport.close()
