"""Chat's WebSocket frames: what clients send (validated models) and the error frames the gateway
sends (every server frame is a `Frame`, ws/frames.py: encoded once, shared by every connection).

Wire formats: JSON text frames by default; with the subprotocol `aether.msgpack` the server
sends binary MessagePack frames (the same objects) and the client may send either. The full
protocol is in docs/chat.md ("The client WebSocket protocol").
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgpack  # type: ignore[import-untyped]
import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from aether_common.errors import AetherError
from aether_common.http import describe_validation_errors
from aether_gateway.ws import frames as ws
from aether_gateway.ws.connection import Connection
from aether_gateway.ws.frames import AuthIn, ClientIn, Frame, PingIn

JSON_SUBPROTOCOL = "aether.json"
MSGPACK_SUBPROTOCOL = "aether.msgpack"


def error_frame(
    code: str, detail: str, *, op: str | None = None, request_id: str | None = None, **extra: Any
) -> Frame:
    obj: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
    if op is not None:
        obj["op"] = op
    if request_id is not None:
        obj["id"] = request_id
    obj.update({k: v for k, v in extra.items() if v is not None})
    return Frame.of(obj)


def error_from(exc: AetherError, **context: Any) -> Frame:
    extra = dict(context)
    if exc.retry_after is not None:
        extra["retry_after"] = exc.retry_after
    return error_frame(exc.error_code, exc.detail, **extra)


def refuse(conn: Connection, obj: dict[str, Any], exc: BadFrame) -> None:
    """A client frame that is not one: its error frame, echoing its `id` when usable."""
    request_id = obj.get("id")
    conn.push(
        error_frame(
            exc.code,
            exc.detail,
            op=exc.op,
            request_id=request_id if isinstance(request_id, str) else None,
        )
    )


def over_rate(conn: Connection, op: str, request_id: str | None, **context: Any) -> bool:
    """Whether the connection's frame rate refuses this frame (its error frame sent)."""
    retry = conn.rate.hit(time.monotonic()) if conn.rate is not None else 0.0
    if not retry:
        return False
    conn.push(
        error_frame(
            "rate_limited",
            f"too many frames; retry in {retry:.1f} s",
            op=op,
            request_id=request_id,
            retry_after=round(retry, 3),
            **context,
        )
    )
    return True


# -- client frames ---------------------------------------------------------------------------------
RoomId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.:-]+$")]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ClientMsgId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.:-]+$")]
Content = Annotated[str, StringConstraints(min_length=1, max_length=16_384)]
Seq = Annotated[int, Field(ge=1, le=2**62)]
MAX_ROOMS_PER_FRAME = 100


class RoomCursor(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    room_id: RoomId
    # Resume: deliver every message with a greater seq first. Absent: live from now on.
    after_seq: Annotated[int, Field(ge=0, le=2**62)] | None = None


class SubscribeIn(ClientIn):
    type: Literal["subscribe"]
    rooms: Annotated[list[RoomCursor], Field(min_length=1, max_length=MAX_ROOMS_PER_FRAME)]


class UnsubscribeIn(ClientIn):
    type: Literal["unsubscribe"]
    room_ids: Annotated[list[RoomId], Field(min_length=1, max_length=MAX_ROOMS_PER_FRAME)]


class SendIn(ClientIn):
    type: Literal["send"]
    room_id: RoomId
    client_msg_id: ClientMsgId
    content: Content
    mentions: Annotated[list[UserId], Field(max_length=100)] = []
    reply_to_seq: Annotated[int, Field(ge=0, le=2**62)] = 0


class EditIn(ClientIn):
    type: Literal["edit"]
    room_id: RoomId
    seq: Seq
    content: Content


class DeleteIn(ClientIn):
    type: Literal["delete"]
    room_id: RoomId
    seq: Seq


class TypingIn(ClientIn):
    type: Literal["typing"]
    room_id: RoomId
    typing: bool = True


class ReadIn(ClientIn):
    type: Literal["read"]
    room_id: RoomId
    seq: Annotated[int, Field(ge=0, le=2**62)]


class PongIn(ClientIn):
    type: Literal["pong"]


ClientFrame = Annotated[
    AuthIn
    | SubscribeIn
    | UnsubscribeIn
    | SendIn
    | EditIn
    | DeleteIn
    | TypingIn
    | ReadIn
    | PingIn
    | PongIn,
    Field(discriminator="type"),
]
CLIENT_FRAME = TypeAdapter(ClientFrame)
CLIENT_TYPES = frozenset(
    ("auth", "subscribe", "unsubscribe", "send", "edit", "delete", "typing", "read", "ping", "pong")
)


class BadFrame(ws.BadFrame):
    """A client frame that cannot be used; answered with an error frame, never a close."""

    def __init__(self, code: str, detail: str, *, op: str | None = None) -> None:
        super().__init__(code, detail)
        self.op = op


def decode(text: str | None, data: bytes | None, max_bytes: int) -> dict[str, Any]:
    """A raw WebSocket message -> a JSON object (text: JSON; binary: MessagePack)."""
    size = len(data) if data is not None else len(text or "")
    if size > max_bytes:
        raise BadFrame("too_large", f"frame is larger than the {max_bytes} bytes allowed")
    try:
        if data is not None:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        else:
            obj = orjson.loads(text or "")
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        kind = "MessagePack" if data is not None else "JSON"
        raise BadFrame("invalid_frame", f"frame is not valid {kind}") from None
    if not isinstance(obj, dict):
        raise BadFrame("invalid_frame", "frame must be an object with a 'type'")
    return obj


def parse(obj: dict[str, Any]) -> Any:
    """A decoded object -> its client frame model, or BadFrame saying what is wrong."""
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise BadFrame("invalid_frame", "frame has no 'type'")
    if kind not in CLIENT_TYPES:
        raise BadFrame("unknown_type", f"unknown frame type {kind[:32]!r}", op=None)
    try:
        return CLIENT_FRAME.validate_python(obj)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        detail = describe_validation_errors(errors()) if callable(errors) else str(exc)
        raise BadFrame("invalid_frame", detail[:500], op=kind) from None
