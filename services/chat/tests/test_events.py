"""Events: the outbox reaches Kafka; auth's user.deleted erases; the retention job."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aether.auth.v1 import events_pb2 as auth_events
from aether.chat.v1 import chat_pb2, events_pb2
from aether.events.v1.envelope_pb2 import EventEnvelope
from aether_chat import events, ids
from aether_common.events import Event, EventProducer, decode_event, event_from_record


async def test_state_changes_reach_kafka_through_the_outbox(start_chat: Any, kit: Any) -> None:
    chat = await start_chat(events=True)
    owner, visitor = chat.user("owner"), chat.user("visitor")
    room = await chat.create_room(owner)
    await chat.stub.JoinRoom(
        chat_pb2.JoinRoomRequest(room_id=room.room_id), metadata=chat.auth(visitor)
    )
    sent = await chat.send(visitor, room.room_id, "to kafka")
    await chat.stub.EditMessage(
        chat_pb2.EditMessageRequest(room_id=room.room_id, seq=1, content="to kafka!"),
        metadata=chat.auth(visitor),
    )
    await chat.stub.DeleteMessage(
        chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=1), metadata=chat.auth(owner)
    )
    await chat.stub.LeaveRoom(
        chat_pb2.LeaveRoomRequest(room_id=room.room_id), metadata=chat.auth(visitor)
    )
    prefix, bootstrap = chat.settings.topic_prefix, chat.settings.kafka_bootstrap

    async def one(topic: str, message_type: Any, count: int = 1) -> list[Event[Any]]:
        records = await kit.read_topic(bootstrap, prefix + topic, count)
        assert all(record.key == room.room_id.encode() for record in records)
        return [event_from_record(r.headers, r.value, message_type) for r in records]

    created, joined, message, edited, deleted, left = await asyncio.gather(
        one(events.ROOM_CREATED, events_pb2.RoomCreated),
        one(events.MEMBER_JOINED, events_pb2.MemberJoined, 2),
        one(events.MESSAGE_CREATED, events_pb2.MessageCreated),
        one(events.MESSAGE_EDITED, events_pb2.MessageEdited),
        one(events.MESSAGE_DELETED, events_pb2.MessageDeleted),
        one(events.MEMBER_LEFT, events_pb2.MemberLeft),
    )
    assert created[0].payload.room.room_id == room.room_id
    assert created[0].source == "chat"
    assert created[0].subject == room.room_id
    assert sorted((e.payload.user_id, e.payload.how) for e in joined) == sorted(
        [(owner, "created"), (visitor, "joined")]
    )
    assert message[0].payload.message == sent.message
    assert edited[0].payload.message.content == "to kafka!"
    assert deleted[0].payload == events_pb2.MessageDeleted(
        room_id=room.room_id,
        seq=1,
        message_id=sent.message.message_id,
        sender_id=visitor,
        deleted_by=owner,
    )
    assert left[0].payload.how == "left"
    assert left[0].payload.user_id == visitor


async def test_a_refused_write_leaves_no_event(chat: Any, kit: Any) -> None:
    owner = chat.user()
    room = await chat.create_room(owner)

    await kit.failure(chat.send(chat.user("stranger"), room.room_id, "nope"))
    await kit.failure(chat.send(owner, room.room_id, "x" * 5000))

    topics = [doc["topic"] async for doc in chat.db.event_outbox.find({})]
    prefix = chat.settings.topic_prefix
    assert sorted(topics) == sorted([prefix + events.ROOM_CREATED, prefix + events.MEMBER_JOINED])


async def test_user_deleted_erases_messages_and_memberships(start_chat: Any) -> None:
    chat = await start_chat(events=True, consume=True)
    gone, heir, other = chat.user("gone"), chat.user("heir"), chat.user("other")
    owned = await chat.create_room(gone, members=[heir])
    elsewhere = await chat.create_room(other, members=[gone])
    invited_to = await chat.create_room(other, visibility=chat.PRIVATE, members=[gone])
    await chat.send(gone, owned.room_id, "secret one", mentions=[heir])
    await chat.send(heir, owned.room_id, "reply")
    await chat.send(gone, elsewhere.room_id, "secret two")
    assert await chat.db.invites.count_documents({"room_id": invited_to.room_id}) == 1
    frames = await chat.subscribe(elsewhere.room_id)

    producer = EventProducer(chat.settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    try:
        deletion = Event(
            type=chat.settings.topic_prefix + events.USER_DELETED,
            subject=gone,
            payload=auth_events.UserDeleted(user_id=gone),
            source="auth",
        )
        await producer.publish(deletion)
        await producer.publish(deletion)  # redelivered: handled once
        deadline = time.monotonic() + 20
        while await chat.db.members.count_documents({"user_id": gone}):
            assert time.monotonic() < deadline, "the user's memberships were never erased"
            await asyncio.sleep(0.05)
        member_frame = await frames.until("member")
    finally:
        await producer.stop()
        await frames.close()

    assert member_frame == {
        "type": "member",
        "room_id": elsewhere.room_id,
        "user_id": gone,
        "event": "left",
    }
    messages = [doc async for doc in chat.db.messages.find({"sender_id": gone})]
    assert len(messages) == 2
    assert all(m["content"] == "" and m["deleted"] and m["mentions"] == [] for m in messages)
    page = await chat.history(heir, owned.room_id)
    assert [(m.seq, m.deleted) for m in page.messages] == [(1, True), (2, False)]
    room = await chat.stub.GetRoom(
        chat_pb2.GetRoomRequest(room_id=owned.room_id), metadata=chat.auth(heir)
    )
    assert room.room.owner_id == heir
    assert room.room.member_count == 1
    assert await chat.db.invites.count_documents({"user_id": gone}) == 0  # invitation gone
    assert await chat.db.processed_events.count_documents({}) == 1
    left = [
        decode_event(EventEnvelope.FromString(doc["envelope"]), events_pb2.MemberLeft)
        async for doc in chat.db.event_outbox.find(
            {"topic": chat.settings.topic_prefix + events.MEMBER_LEFT}
        )
    ]
    assert sorted((e.payload.room_id, e.payload.how) for e in left) == sorted(
        [(owned.room_id, "user_deleted"), (elsewhere.room_id, "user_deleted")]
    )


async def test_retention_removes_messages_past_their_age(start_chat: Any) -> None:
    chat = await start_chat(message_retention_days=30)
    owner = chat.user()
    room = await chat.create_room(owner)
    for i in range(4):
        await chat.send(owner, room.room_id, f"m{i + 1}")
    assert len((await chat.history(owner, room.room_id)).messages) == 4  # now cached
    # Seqs 1 and 2 were sent 40 days ago (their ids carry their creation time).
    old = datetime.now(UTC) - timedelta(days=40)
    async for doc in chat.db.messages.find({"room_id": room.room_id, "seq": {"$lte": 2}}):
        await chat.db.messages.delete_one({"_id": doc["_id"]})
        stamp = int(old.timestamp() * 1000)
        await chat.db.messages.insert_one(
            doc | {"_id": ids.new_id(stamp), "created_at": old.replace(microsecond=0)}
        )

    deleted = await chat.app.retention.run_once()

    assert deleted == 2
    page = await chat.history(owner, room.room_id)
    assert [m.content for m in page.messages] == ["m3", "m4"]
    assert not page.has_more
    assert page.last_seq == 4
    assert await chat.app.retention.run_once() == 0
