"""chat's protobuf messages -> the JSON objects clients see (REST bodies and WebSocket frames).

The message object is the one of docs/chat.md, so a message fetched with GetHistory to fill a gap
looks exactly like one chat published live.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from aether.chat.v1 import chat_pb2
from aether_gateway.convert import enum_name


def timestamp(message: Any, field: str) -> str | None:
    """RFC 3339 UTC with milliseconds (`2025-01-02T03:04:05.123Z`, chat's format for the
    frames it publishes), None when the field is unset."""
    if not message.HasField(field):
        return None
    value: Timestamp = getattr(message, field)
    moment = value.ToDatetime()
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{value.nanos // 1_000_000:03d}Z"


def visibility_name(value: int) -> str:
    try:
        return enum_name("ROOM_VISIBILITY_", chat_pb2.RoomVisibility.Name(value))  # type: ignore[arg-type]
    except ValueError:
        return "unknown"


def visibility_value(name: str) -> chat_pb2.RoomVisibility.ValueType:
    return chat_pb2.RoomVisibility.Value(f"ROOM_VISIBILITY_{name.upper()}")


def role_name(value: int) -> str:
    try:
        return enum_name("MEMBER_ROLE_", chat_pb2.MemberRole.Name(value))  # type: ignore[arg-type]
    except ValueError:
        return "unknown"


def message(m: chat_pb2.Message) -> dict[str, Any]:
    return {
        "message_id": m.message_id,
        "room_id": m.room_id,
        "seq": m.seq,
        "sender_id": m.sender_id,
        "client_msg_id": m.client_msg_id,
        "content": m.content,
        "mentions": list(m.mentions),
        "reply_to_seq": m.reply_to_seq,
        "created_at": timestamp(m, "created_at"),
        "edited_at": timestamp(m, "edited_at"),
        "deleted": m.deleted,
    }


def message_frame(m: chat_pb2.Message) -> dict[str, Any]:
    """The `message` fan-out frame for a stored message (gap filling, resume)."""
    return {"type": "message", "room_id": m.room_id, "seq": m.seq, "message": message(m)}


def room(r: chat_pb2.Room) -> dict[str, Any]:
    return {
        "room_id": r.room_id,
        "name": r.name,
        "description": r.description,
        "visibility": visibility_name(r.visibility),
        "owner_id": r.owner_id,
        "created_at": timestamp(r, "created_at"),
        "last_seq": r.last_seq,
        "member_count": r.member_count,
    }


def room_summary(s: chat_pb2.RoomSummary) -> dict[str, Any]:
    return {
        "room": room(s.room),
        "unread_count": s.unread_count,
        "last_message": message(s.last_message) if s.HasField("last_message") else None,
        "role": role_name(s.role),
    }


def member(m: chat_pb2.Member) -> dict[str, Any]:
    return {
        "user_id": m.user_id,
        "role": role_name(m.role),
        "joined_at": timestamp(m, "joined_at"),
        "last_read_seq": m.last_read_seq,
    }


def presence(p: chat_pb2.Presence) -> dict[str, Any]:
    return {"user_id": p.user_id, "online": p.online, "last_seen": timestamp(p, "last_seen")}
