"""Errors the gateway itself raises, and the one error body for responses made in middleware.

Route code raises `aether_common.errors` types (the app's handlers shape them). Middleware runs
outside those handlers, so it answers with `error_response`, which writes the same shape.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse

from aether_common.grpc import PeerNotImplemented

# The upstream service does not offer the method (an older version is deployed): 501.
UpstreamNotImplemented = PeerNotImplemented


def error_body(status: int, code: str, detail: str) -> dict[str, object]:
    return {"error": code, "detail": detail, "status_code": status}


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, code, detail), status_code=status, headers=headers)
