"""Consumed events, produced to the real broker: chat messages are embedded into "chat" and
searchable by the room's members; auth's user.deleted erases the user's records everywhere."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from aether.auth.v1 import events_pb2 as auth_events
from aether.chat.v1 import chat_pb2
from aether.chat.v1 import events_pb2 as chat_events
from aether.memory.v1 import memory_pb2
from aether_common.events import Event, EventProducer
from aether_memory import consumers
from aether_memory.index import Filters

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool]) -> T:
    """Poll until `ok(await probe())` (the consumer works in the background)."""
    deadline = time.monotonic() + 30
    while True:
        value = await probe()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"never happened; last value: {value!r}"
        await asyncio.sleep(0.1)


def chat_message(room_id: str, sender: str, content: str, seq: int) -> chat_pb2.Message:
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(datetime.now(UTC))
    return chat_pb2.Message(
        message_id=str(uuid.uuid4()),
        room_id=room_id,
        seq=seq,
        sender_id=sender,
        client_msg_id=uuid.uuid4().hex,
        content=content,
        created_at=created,
    )


class Publisher:
    def __init__(self, memory: Any) -> None:
        self.prefix = memory.settings.topic_prefix
        self.producer = EventProducer(memory.settings.kafka_bootstrap, linger_ms=0)

    def event(self, topic: str, subject: str, payload: Message, source: str) -> Event[Any]:
        return Event(type=self.prefix + topic, subject=subject, payload=payload, source=source)

    def created(self, message: chat_pb2.Message) -> Event[Any]:
        payload = chat_events.MessageCreated(message=message)
        return self.event(consumers.MESSAGE_CREATED, message.room_id, payload, "chat")

    def edited(self, message: chat_pb2.Message) -> Event[Any]:
        payload = chat_events.MessageEdited(message=message)
        return self.event(consumers.MESSAGE_EDITED, message.room_id, payload, "chat")

    def deleted(self, message: chat_pb2.Message) -> Event[Any]:
        payload = chat_events.MessageDeleted(
            room_id=message.room_id,
            seq=message.seq,
            message_id=message.message_id,
            sender_id=message.sender_id,
            deleted_by=message.sender_id,
        )
        return self.event(consumers.MESSAGE_DELETED, message.room_id, payload, "chat")

    def user_deleted(self, user_id: str) -> Event[Any]:
        payload = auth_events.UserDeleted(user_id=user_id)
        return self.event(consumers.USER_DELETED, user_id, payload, "auth")

    async def publish(self, *events: Event[Any]) -> None:
        for event in events:
            await self.producer.publish(event)


async def test_chat_messages_are_embedded_and_searchable_by_members(start_memory: Any) -> None:
    memory = await start_memory(events=True)
    sender, member = memory.user("sender"), memory.user("member")
    room = memory.chat.room(sender, member)
    rates = chat_message(room, sender, "The central bank raised interest rates again.", 1)
    lunch = chat_message(room, sender, "Anyone up for lunch at noon?", 2)
    publisher = Publisher(memory)
    await publisher.producer.start()
    try:
        created = publisher.created(rates)
        await publisher.publish(created, publisher.created(lunch), created)  # one redelivered

        def search(query: str) -> Callable[[], Awaitable[list[Any]]]:
            return lambda: memory.search(member, "chat", query, room_id=room)

        hits = await eventually(search("interest rate hike"), lambda hits: len(hits) == 2)
        top = hits[0].record
        assert (top.id, top.text) == (rates.message_id, rates.content)
        assert (top.user_id, top.room_id) == (sender, room)
        assert dict(top.metadata) == {"seq": 1}
        assert top.created_at == rates.created_at

        edited = chat_pb2.Message()
        edited.CopyFrom(lunch)
        edited.content = "Bitcoin just broke its all-time high."
        await publisher.publish(publisher.edited(edited))
        hits = await eventually(
            search("crypto price record"),
            lambda hits: bool(hits) and hits[0].record.text == edited.content,
        )
        assert hits[0].record.id == lunch.message_id

        await publisher.publish(publisher.deleted(rates))
        hits = await eventually(search("interest rates"), lambda hits: len(hits) == 1)
        assert hits[0].record.id == lunch.message_id
    finally:
        await publisher.producer.stop()

    async with memory.app.database.connection() as conn:
        handled = await conn.fetchval("SELECT count(*) FROM processed_events")
    assert handled == 4  # created twice counts once


async def test_user_deleted_erases_the_users_records_everywhere(start_memory: Any) -> None:
    memory = await start_memory(events=True)
    gone, stays = memory.user("gone"), memory.user("stays")
    room = memory.chat.room(gone, stays)
    await memory.upsert(gone, "memories", "My broker account number is in the blue folder")
    await memory.upsert(stays, "memories", "My broker account is with the local bank")
    await memory.upsert(
        gone, "knowledge", memory_pb2.Record(id="gone-doc", text="How to read candlestick charts"),
        roles=["admin"],
    )  # fmt: skip
    publisher = Publisher(memory)
    await publisher.producer.start()
    try:
        await publisher.publish(
            publisher.created(chat_message(room, gone, "My account is down 20 percent", 1)),
            publisher.created(chat_message(room, stays, "My account is up 5 percent", 2)),
        )
        await eventually(
            lambda: memory.search(stays, "chat", "account", room_id=room),
            lambda hits: len(hits) == 2,
        )
        erase = publisher.user_deleted(gone)
        await publisher.publish(erase, erase)  # redelivered: handled once

        async def rows_of_gone() -> int:
            async with memory.app.database.connection() as conn:
                count: int = await conn.fetchval(
                    "SELECT count(*) FROM memory_records WHERE user_id = $1", gone
                )
            return count

        await eventually(rows_of_gone, lambda n: n == 0)
    finally:
        await publisher.producer.stop()

    assert await memory.search(gone, "memories", "broker account") == []
    assert [h.record.user_id for h in await memory.search(stays, "memories", "broker")] == [stays]
    assert await memory.search(stays, "knowledge", "candlestick charts") == []
    chat_hits = await memory.search(stays, "chat", "account", room_id=room)
    assert [h.record.user_id for h in chat_hits] == [stays]
    index = memory.app.index
    for namespace in index.namespaces:
        assert await index.count(namespace, Filters(user_id=gone)) == 0, namespace
    async with memory.app.database.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM memory_records") == 2
