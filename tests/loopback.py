"""Helpers for the loopback HTTP servers that tests start (no internet here, and no mocks)."""

from __future__ import annotations


def reply(handler, status: int, headers: dict[str, str], body: bytes) -> None:
    """Answer one request of an ``http.server`` handler."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
