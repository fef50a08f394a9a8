"""Wire models (pydantic) of `/api/chat/*`: strict requests (unknown fields refused, sane
bounds), answers in the shapes of docs/chat.md (the message object is the one WebSocket frames
carry)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from aether_gateway.schemas import Request, Response

ID_PATTERN = r"^[\w.:-]+$"
RoomId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
ClientMsgId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
Content = Annotated[str, StringConstraints(min_length=1, max_length=16_384)]
RoomName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(max_length=2_000)]
SeqValue = Annotated[int, Field(ge=0, le=2**62)]
Visibility = Literal["public", "private"]


# -- requests ------------------------------------------------------------------------------------
class CreateRoomIn(Request):
    name: RoomName
    description: Description = ""
    visibility: Visibility = "private"
    member_ids: Annotated[list[UserId], Field(max_length=500)] = []


class SendMessageIn(Request):
    room_id: RoomId
    # The idempotency key: a retry with the same one returns the stored message (201 -> 200).
    # Generated when absent, which makes the request safe to retry only for this one call.
    client_msg_id: ClientMsgId | None = None
    content: Content
    mentions: Annotated[list[UserId], Field(max_length=100)] = []
    reply_to_seq: SeqValue = 0


class EditMessageIn(Request):
    content: Content


class InviteIn(Request):
    user_id: UserId


class MarkReadIn(Request):
    seq: SeqValue


# -- responses -----------------------------------------------------------------------------------
class MessageOut(Response):
    message_id: str
    room_id: str
    seq: int
    sender_id: str
    client_msg_id: str
    content: str = Field(description="empty when deleted")
    mentions: list[str]
    reply_to_seq: int = Field(description="0: not a reply")
    created_at: str | None = Field(description="RFC 3339, UTC")
    edited_at: str | None = Field(description="null when never edited")
    deleted: bool


class RoomOut(Response):
    room_id: str
    name: str
    description: str
    visibility: str
    owner_id: str
    created_at: str | None
    last_seq: int
    member_count: int


class RoomSummaryOut(Response):
    room: RoomOut
    unread_count: int
    last_message: MessageOut | None
    role: str


class RoomsOut(Response):
    rooms: list[RoomSummaryOut]
    next_page_token: str = Field(description="empty on the last page")


class MemberOut(Response):
    user_id: str
    role: str
    joined_at: str | None
    last_read_seq: int


class MembersOut(Response):
    members: list[MemberOut]
    next_page_token: str


class SendMessageOut(Response):
    message: MessageOut
    created: bool = Field(description="false when this retried an already stored message")


class HistoryOut(Response):
    messages: list[MessageOut] = Field(description="ascending by seq")
    has_more: bool = Field(description="more messages exist past this page, in the direction asked")
    last_seq: int = Field(description="the room's last seq when the page was read")


class ReadOut(Response):
    last_read_seq: int
    unread_count: int


class PresenceOut(Response):
    user_id: str
    online: bool
    last_seen: str | None


class RoomPresenceOut(Response):
    members: list[PresenceOut]
