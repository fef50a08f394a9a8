"""The events the chat service publishes (docs/events.md): topic = type, key = room id, so one
room's events stay in order on one partition. Payloads: protos/aether/chat/v1/events.proto, built
here from the service's records (the Kafka edge, as grpc.py is the RPC one).

It consumes `aether.user.deleted.v1` (auth) to erase what it holds about a deleted account.
"""

from __future__ import annotations

from google.protobuf.message import Message

from aether.chat.v1 import events_pb2
from aether_chat import schemas
from aether_chat.repository import MessageRecord, Role, RoomRecord
from aether_common.events import Event, TopicSpec

SOURCE = "chat"

ROOM_CREATED = "aether.chat.room.created.v1"
MEMBER_JOINED = "aether.chat.member.joined.v1"
MEMBER_LEFT = "aether.chat.member.left.v1"
MESSAGE_CREATED = "aether.chat.message.created.v1"
MESSAGE_EDITED = "aether.chat.message.edited.v1"
MESSAGE_DELETED = "aether.chat.message.deleted.v1"

TOPICS = (
    ROOM_CREATED,
    MEMBER_JOINED,
    MEMBER_LEFT,
    MESSAGE_CREATED,
    MESSAGE_EDITED,
    MESSAGE_DELETED,
)

# Consumed (auth's event; payload aether.auth.v1.UserDeleted).
USER_DELETED = "aether.user.deleted.v1"


def topic_specs(prefix: str = "") -> list[TopicSpec]:
    return [TopicSpec(prefix + topic) for topic in TOPICS]


AnyEvent = Event[Message]


class ChatEvents:
    """Builds each event with its topic (prefixed in tests), key and payload."""

    def __init__(self, topic_prefix: str = "") -> None:
        self.prefix = topic_prefix

    def _event(self, topic: str, room_id: str, payload: Message) -> AnyEvent:
        return Event(type=self.prefix + topic, subject=room_id, payload=payload, source=SOURCE)

    def room_created(self, room: RoomRecord) -> AnyEvent:
        payload = events_pb2.RoomCreated(room=schemas.room_pb(room))
        return self._event(ROOM_CREATED, room.id, payload)

    def member_joined(self, room_id: str, user_id: str, role: Role, how: str) -> AnyEvent:
        payload = events_pb2.MemberJoined(
            room_id=room_id, user_id=user_id, role=schemas.role_to_pb(role), how=how
        )
        return self._event(MEMBER_JOINED, room_id, payload)

    def member_left(self, room_id: str, user_id: str, how: str, by_user_id: str = "") -> AnyEvent:
        payload = events_pb2.MemberLeft(
            room_id=room_id, user_id=user_id, how=how, by_user_id=by_user_id
        )
        return self._event(MEMBER_LEFT, room_id, payload)

    def message_created(self, message: MessageRecord) -> AnyEvent:
        payload = events_pb2.MessageCreated(message=schemas.message_pb(message))
        return self._event(MESSAGE_CREATED, message.room_id, payload)

    def message_edited(self, message: MessageRecord) -> AnyEvent:
        payload = events_pb2.MessageEdited(message=schemas.message_pb(message))
        return self._event(MESSAGE_EDITED, message.room_id, payload)

    def message_deleted(
        self, room_id: str, seq: int, message_id: str, sender_id: str, deleted_by: str
    ) -> AnyEvent:
        payload = events_pb2.MessageDeleted(
            room_id=room_id,
            seq=seq,
            message_id=message_id,
            sender_id=sender_id,
            deleted_by=deleted_by,
        )
        return self._event(MESSAGE_DELETED, room_id, payload)
