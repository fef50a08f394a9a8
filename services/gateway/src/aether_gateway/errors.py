"""Errors the gateway itself raises, and the one error body for responses made in middleware.

Route code raises `aether_common.errors` types (the app's handlers shape them). Middleware runs
outside those handlers, so it answers with `error_response`, which writes the same shape.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from fastapi.responses import JSONResponse

from aether_common.errors import AetherError


class UpstreamNotImplemented(AetherError):
    """The upstream service does not offer the method (an older version is deployed)."""

    code = "not_implemented"
    http_status = 501
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


def error_body(status: int, code: str, detail: str) -> dict[str, object]:
    return {"error": code, "detail": detail, "status_code": status}


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, code, detail), status_code=status, headers=headers)
