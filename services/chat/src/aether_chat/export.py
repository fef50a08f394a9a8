"""The JSON document of ExportMyData (the GDPR export; docs/chat.md "GDPR export"): everything
chat holds about the caller.

- `rooms`: every room the caller is a member of, with their membership (role, joined_at, read
  position). The rooms they own are among them: an owner is always a member (leaving hands the
  room on), so there is no other room keyed by them.
- `invitations`: the private rooms they were invited to and have not joined yet.
- `messages`: every message they sent, every field; a deleted one is a tombstone
  (`deleted: true`, no content left), listed too.
- `presence`: their last heartbeat as Redis keeps it (it expires by itself).

Messages other people sent are theirs, not the caller's: they are not in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from aether_chat.repository import MemberRecord, MessageRecord, RoomRecord
from aether_common.data_export import ExportDocument


class ExportedMembership(BaseModel):
    role: str
    joined_at: datetime
    last_read_seq: int


class ExportedRoom(BaseModel):
    id: str
    name: str
    description: str
    visibility: str
    owner_id: str
    created_at: datetime
    member_count: int
    last_seq: int
    last_activity_at: datetime
    membership: ExportedMembership


class ExportedInvitation(BaseModel):
    room_id: str
    invited_by: str
    created_at: datetime


class ExportedMessage(BaseModel):
    id: str
    room_id: str
    seq: int
    client_msg_id: str
    content: str
    mentions: list[str]
    reply_to_seq: int
    created_at: datetime
    edited_at: datetime | None
    deleted: bool
    deleted_by: str
    deleted_at: datetime | None


class ExportedPresence(BaseModel):
    online: bool
    last_seen_at: datetime | None


class ChatExport(ExportDocument):
    service: Literal["chat"] = "chat"
    rooms: list[ExportedRoom]
    invitations: list[ExportedInvitation]
    messages: list[ExportedMessage]
    presence: ExportedPresence

    @classmethod
    def of(
        cls,
        user_id: str,
        *,
        memberships: Sequence[MemberRecord],
        rooms: Sequence[RoomRecord],
        invitations: Sequence[dict[str, Any]],
        messages: Sequence[MessageRecord],
        presence: tuple[bool, int | None],
    ) -> ChatExport:
        by_id = {room.id: room for room in rooms}
        online, last_seen_ms = presence
        return cls(
            user_id=user_id,
            rooms=[
                _room(by_id[m.room_id], m)
                for m in sorted(memberships, key=lambda m: (m.joined_at, m.room_id))
                if m.room_id in by_id  # a room deleted under the read; nothing left of it
            ],
            invitations=[
                ExportedInvitation(
                    room_id=i["room_id"], invited_by=i["invited_by"], created_at=i["created_at"]
                )
                for i in sorted(invitations, key=lambda i: (i["created_at"], i["room_id"]))
            ],
            messages=[_message(m) for m in sorted(messages, key=lambda m: (m.created_at, m.id))],
            presence=ExportedPresence(
                online=online,
                last_seen_at=(
                    datetime.fromtimestamp(last_seen_ms / 1000, UTC)
                    if last_seen_ms is not None
                    else None
                ),
            ),
        )


def _room(room: RoomRecord, member: MemberRecord) -> ExportedRoom:
    return ExportedRoom(
        id=room.id,
        name=room.name,
        description=room.description,
        visibility=room.visibility.value,
        owner_id=room.owner_id,
        created_at=room.created_at,
        member_count=room.member_count,
        last_seq=room.last_seq,
        last_activity_at=room.last_activity_at,
        membership=ExportedMembership(
            role=member.role.value, joined_at=member.joined_at, last_read_seq=member.last_read_seq
        ),
    )


def _message(m: MessageRecord) -> ExportedMessage:
    return ExportedMessage(
        id=m.id,
        room_id=m.room_id,
        seq=m.seq,
        client_msg_id=m.client_msg_id,
        content=m.content,
        mentions=list(m.mentions),
        reply_to_seq=m.reply_to_seq,
        created_at=m.created_at,
        edited_at=m.edited_at,
        deleted=m.deleted,
        deleted_by=m.deleted_by,
        deleted_at=m.deleted_at,
    )
