"""The conversions between the wire and the service's records: protobuf (chat.proto) for the RPC
answers (grpc.py), the event payloads (events.py) and the two answers the caches keep encoded
(`history_payload`, `room_list_payload`); and the JSON fan-out frames (docs/chat.md). With
grpc.py, events.py and consumers.py (consumed payloads), the only place protobuf is built or read.

It imports no module of the service but repository.py (the records) and ids.py: service.py calls
it for frames and the cached answers, so it cannot import service.py's input records back;
grpc.py builds those (NewRoom, NewMessage, HistoryQuery) from the requests.

Frames are plain dicts here; `realtime.Changes.publish` serialises each one once with orjson and
the same bytes go to every gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from aether.chat.v1 import chat_pb2
from aether_chat.ids import rfc3339
from aether_chat.repository import MemberRecord, MessageRecord, Role, RoomRecord, Visibility

Frame = dict[str, Any]

_ROLE_TO_PB = {
    Role.MEMBER: chat_pb2.MEMBER_ROLE_MEMBER,
    Role.ADMIN: chat_pb2.MEMBER_ROLE_ADMIN,
    Role.OWNER: chat_pb2.MEMBER_ROLE_OWNER,
}
_VISIBILITY_TO_PB = {
    Visibility.PUBLIC: chat_pb2.ROOM_VISIBILITY_PUBLIC,
    Visibility.PRIVATE: chat_pb2.ROOM_VISIBILITY_PRIVATE,
}
_VISIBILITY_FROM_PB: dict[int, Visibility] = {
    int(pb): visibility for visibility, pb in _VISIBILITY_TO_PB.items()
}


def timestamp(moment: datetime) -> Timestamp:
    seconds = moment.timestamp()
    whole = int(seconds // 1)
    return Timestamp(seconds=whole, nanos=moment.microsecond * 1000)


def role_to_pb(role: Role) -> chat_pb2.MemberRole.ValueType:
    return _ROLE_TO_PB[role]


def visibility_from_pb(value: int) -> Visibility | None:
    """None for ROOM_VISIBILITY_UNSPECIFIED and values this service does not know."""
    return _VISIBILITY_FROM_PB.get(value)


@dataclass(frozen=True, slots=True)
class RoomSummary:
    """One row of a user's conversation list (ListMyRooms), before it is encoded."""

    room: RoomRecord
    unread_count: int
    role: Role
    last_message: MessageRecord | None


# -- protobuf ------------------------------------------------------------------------------------
def room_pb(room: RoomRecord) -> chat_pb2.Room:
    return chat_pb2.Room(
        room_id=room.id,
        name=room.name,
        description=room.description,
        visibility=_VISIBILITY_TO_PB[room.visibility],
        owner_id=room.owner_id,
        created_at=timestamp(room.created_at),
        last_seq=room.last_seq,
        member_count=room.member_count,
    )


def member_pb(member: MemberRecord) -> chat_pb2.Member:
    return chat_pb2.Member(
        user_id=member.user_id,
        role=_ROLE_TO_PB[member.role],
        joined_at=timestamp(member.joined_at),
        last_read_seq=member.last_read_seq,
    )


def message_pb(message: MessageRecord) -> chat_pb2.Message:
    pb = chat_pb2.Message(
        message_id=message.id,
        room_id=message.room_id,
        seq=message.seq,
        sender_id=message.sender_id,
        client_msg_id=message.client_msg_id,
        content=message.content,
        mentions=message.mentions,
        reply_to_seq=message.reply_to_seq,
        created_at=timestamp(message.created_at),
        deleted=message.deleted,
    )
    if message.edited_at is not None:
        pb.edited_at.CopyFrom(timestamp(message.edited_at))
    return pb


def presence_pb(user_id: str, online: bool, last_seen_ms: int | None) -> chat_pb2.Presence:
    presence = chat_pb2.Presence(user_id=user_id, online=online)
    if last_seen_ms is not None:
        presence.last_seen.FromMilliseconds(last_seen_ms)
    return presence


# -- the cached answers (cache.py keeps them as these bytes) ------------------------------------
def history_payload(messages: Sequence[MessageRecord], *, has_more: bool, last_seq: int) -> bytes:
    """A GetHistoryResponse, encoded."""
    return history_pb(messages, has_more=has_more, last_seq=last_seq).SerializeToString()


def history_pb(
    messages: Sequence[MessageRecord], *, has_more: bool, last_seq: int
) -> chat_pb2.GetHistoryResponse:
    return chat_pb2.GetHistoryResponse(
        messages=[message_pb(message) for message in messages],
        has_more=has_more,
        last_seq=last_seq,
    )


def room_list_payload(summaries: Sequence[RoomSummary]) -> bytes:
    """A ListMyRoomsResponse holding every summary, encoded (no page token)."""
    return chat_pb2.ListMyRoomsResponse(
        rooms=[room_summary_pb(summary) for summary in summaries]
    ).SerializeToString()


def room_summary_pb(summary: RoomSummary) -> chat_pb2.RoomSummary:
    pb = chat_pb2.RoomSummary(
        room=room_pb(summary.room),
        unread_count=summary.unread_count,
        role=_ROLE_TO_PB[summary.role],
    )
    if summary.last_message is not None:
        pb.last_message.CopyFrom(message_pb(summary.last_message))
    return pb


def rooms_page_pb(
    listing: bytes, start: int, stop: int, next_page_token: str
) -> chat_pb2.ListMyRoomsResponse:
    """The page [start:stop] of an encoded list (room_list_payload), as the answer."""
    rooms = chat_pb2.ListMyRoomsResponse.FromString(listing).rooms[start:stop]
    return chat_pb2.ListMyRoomsResponse(rooms=rooms, next_page_token=next_page_token)


# -- fan-out frames (docs/chat.md) ---------------------------------------------------------------
def message_json(message: MessageRecord) -> Frame:
    return {
        "message_id": message.id,
        "room_id": message.room_id,
        "seq": message.seq,
        "sender_id": message.sender_id,
        "client_msg_id": message.client_msg_id,
        "content": message.content,
        "mentions": list(message.mentions),
        "reply_to_seq": message.reply_to_seq,
        "created_at": rfc3339(message.created_at),
        "edited_at": rfc3339(message.edited_at) if message.edited_at is not None else None,
        "deleted": message.deleted,
    }


def message_frame(message: MessageRecord) -> Frame:
    return {
        "type": "message",
        "room_id": message.room_id,
        "seq": message.seq,
        "message": message_json(message),
    }


def edit_frame(message: MessageRecord) -> Frame:
    return {
        "type": "edit",
        "room_id": message.room_id,
        "seq": message.seq,
        "message": message_json(message),
    }


def delete_frame(message: MessageRecord, deleted_by: str) -> Frame:
    return {
        "type": "delete",
        "room_id": message.room_id,
        "seq": message.seq,
        "message_id": message.id,
        "deleted_by": deleted_by,
    }


def typing_frame(room_id: str, user_id: str, typing: bool) -> Frame:
    return {"type": "typing", "room_id": room_id, "user_id": user_id, "typing": typing}


def presence_frame(room_id: str, user_id: str, online: bool) -> Frame:
    return {"type": "presence", "room_id": room_id, "user_id": user_id, "online": online}


def read_frame(room_id: str, user_id: str, seq: int) -> Frame:
    return {"type": "read", "room_id": room_id, "user_id": user_id, "seq": seq}


def member_frame(room_id: str, user_id: str, event: str) -> Frame:
    """`event`: joined, left or removed (left/removed make gateways unsubscribe the user)."""
    return {"type": "member", "room_id": room_id, "user_id": user_id, "event": event}
