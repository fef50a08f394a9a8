"""`WS /ws/ai-chat` frames: what clients send (validated models) and what the gateway sends
(JSON text frames; the protocol is docs/ai.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, TypeAdapter

from aether_common.errors import AetherError
from aether_common.http import describe_validation_errors
from aether_gateway.ai.schemas import ChatIn
from aether_gateway.ws import frames as ws
from aether_gateway.ws.close_codes import (
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_RATE_LIMITED,
    CLOSE_TRY_LATER,
    CLOSE_UNAUTHENTICATED,
)
from aether_gateway.ws.frames import AuthIn, ClientIn, Frame, PingIn, RequestId

# The status an error frame sent before a close carries.
CLOSE_STATUS = {
    CLOSE_TRY_LATER: 503,
    CLOSE_UNAUTHENTICATED: 401,
    CLOSE_FORBIDDEN_ORIGIN: 403,
    CLOSE_RATE_LIMITED: 429,
}
# Not an HTTP status but the de facto one for "the client gave up" (nginx's 499).
CANCELLED_STATUS = 499


class ChatFrameIn(ChatIn):
    type: Literal["chat"]
    id: RequestId | None = None


class CancelIn(ClientIn):
    type: Literal["cancel"]


ClientFrame = Annotated[AuthIn | ChatFrameIn | CancelIn | PingIn, Field(discriminator="type")]
CLIENT_FRAME = TypeAdapter(ClientFrame)
CLIENT_TYPES = frozenset(("auth", "chat", "cancel", "ping"))


class BadFrame(ws.BadFrame):
    """A client frame that cannot be used: an error frame answers it, the connection goes on."""

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(code, detail)
        self.status = status


def decode(text: str | None, data: bytes | None, max_bytes: int) -> dict[str, Any]:
    """A raw WebSocket message -> a JSON object."""
    size = len(data) if data is not None else len((text or "").encode())
    if size > max_bytes:
        raise BadFrame("too_large", f"frame is larger than the {max_bytes} bytes allowed", 413)
    if data is not None:
        raise BadFrame("invalid_frame", "send JSON text frames, not binary ones")
    try:
        obj = orjson.loads(text or "")
    except ValueError:
        raise BadFrame("invalid_frame", "frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise BadFrame("invalid_frame", "frame must be an object with a 'type'")
    return obj


def parse(obj: dict[str, Any]) -> Any:
    """A decoded object -> its frame model, or BadFrame saying what is wrong."""
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise BadFrame("invalid_frame", "frame has no 'type'")
    if kind not in CLIENT_TYPES:
        raise BadFrame("unknown_type", f"unknown frame type {kind[:32]!r}")
    try:
        return CLIENT_FRAME.validate_python(obj)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        detail = describe_validation_errors(errors()) if callable(errors) else str(exc)
        raise BadFrame("invalid_frame", detail[:500]) from None


def request_id_of(obj: dict[str, Any]) -> str | None:
    value = obj.get("id")
    return value if isinstance(value, str) and len(value) <= 128 else None


# -- server frames -------------------------------------------------------------------------------
def frame(kind: str, data: dict[str, Any], request_id: str | None = None) -> Frame:
    obj: dict[str, Any] = {"type": kind, **data}
    if request_id is not None:
        obj["id"] = request_id
    return Frame.of(obj)


def error_frame(
    code: str,
    detail: str,
    status: int,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> Frame:
    obj: dict[str, Any] = {"type": "error", "error": code, "detail": detail, "status_code": status}
    if retry_after is not None:
        obj["retry_after"] = retry_after
    if request_id is not None:
        obj["id"] = request_id
    return Frame.of(obj)


def error_from(error: AetherError, request_id: str | None = None) -> Frame:
    return error_frame(
        error.error_code,
        error.detail,
        error.http_status,
        request_id=request_id,
        retry_after=error.retry_after,
    )
