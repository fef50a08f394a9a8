"""Transactional outbox (PostgreSQL and MongoDB) -> relay -> the real broker."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from aether.testing.v1.probe_pb2 import ProbeEvent
from aether_common.events import (
    Event,
    EventProducer,
    MongoOutboxRelay,
    OutboxRelay,
    PgOutboxRelay,
    RelayOptions,
    TopicSpec,
    outbox_mongo,
    outbox_pg,
)
from aether_devstack.servers import NativeStack

FAST = RelayOptions(poll_interval=0.5, retry_backoff=0.05, max_backoff=0.5, stop_grace_s=2.0)


class Outbox(Protocol):
    async def write(self, events: Sequence[Event[Any]], *, commit: bool = True) -> None: ...
    def relay(
        self, producer: EventProducer, options: RelayOptions, topics: Sequence[TopicSpec]
    ) -> OutboxRelay: ...
    async def unsent(self) -> int: ...


class PgOutbox:
    def __init__(self, pool: Any, dsn: str) -> None:
        self.pool, self.dsn = pool, dsn

    async def write(self, events: Sequence[Event[Any]], *, commit: bool = True) -> None:
        async with self.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            # The state change the events describe, then the events, in one transaction.
            await conn.executemany(
                "INSERT INTO handled (event_id, seq) VALUES ($1, $2)",
                [(e.id, e.payload.sequence) for e in events],
            )
            await outbox_pg.add_many(conn, events)
            await (tx.commit() if commit else tx.rollback())

    def relay(
        self, producer: EventProducer, options: RelayOptions, topics: Sequence[TopicSpec]
    ) -> OutboxRelay:
        return PgOutboxRelay(self.dsn, producer, options=options, topics=topics)

    async def unsent(self) -> int:
        return int(
            await self.pool.fetchval("SELECT count(*) FROM event_outbox WHERE sent_at IS NULL")
        )


class MongoOutbox:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db

    async def write(self, events: Sequence[Event[Any]], *, commit: bool = True) -> None:
        async with self.db.client.start_session() as session:
            await session.start_transaction()
            await self.db["things"].insert_many(
                [{"_id": e.id, "seq": e.payload.sequence} for e in events], session=session
            )
            await outbox_mongo.add_many(self.db, session, events)
            await (session.commit_transaction() if commit else session.abort_transaction())

    def relay(
        self, producer: EventProducer, options: RelayOptions, topics: Sequence[TopicSpec]
    ) -> OutboxRelay:
        return MongoOutboxRelay(self.db, producer, options=options, topics=topics)

    async def unsent(self) -> int:
        return await self.db[outbox_mongo.OUTBOX_COLLECTION].count_documents({"sent_at": None})


@pytest.fixture
async def mongo_outbox(mongo_db: AsyncDatabase[dict[str, Any]]) -> MongoOutbox:
    await mongo_db.create_collection("things")  # collections cannot be created in a transaction
    await mongo_db.create_collection(outbox_mongo.OUTBOX_COLLECTION)
    await outbox_mongo.ensure_indexes(mongo_db)
    return MongoOutbox(mongo_db)


@pytest.fixture(params=["postgres", "mongo"])
def outbox(request: pytest.FixtureRequest) -> Outbox:
    if request.param == "postgres":
        return PgOutbox(request.getfixturevalue("pg_pool"), request.getfixturevalue("pg_dsn"))
    result: Outbox = request.getfixturevalue("mongo_outbox")
    return result


def ids_of(records: list[Any]) -> list[str]:
    return [dict(r.headers)["ce_id"].decode() for r in records]


def first_occurrences(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


async def test_add_needs_the_callers_transaction(pg_pool: Any, make_event: Any) -> None:
    async with pg_pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await outbox_pg.add(conn, make_event("t", 1))


async def test_rolled_back_event_is_never_published(
    outbox: Outbox,
    producer: EventProducer,
    probe_topic: TopicSpec,
    read_topic: Callable[..., Awaitable[list[Any]]],
    make_event: Callable[..., Event[ProbeEvent]],
) -> None:
    doomed, kept = make_event(probe_topic.name, 1), make_event(probe_topic.name, 2)
    await outbox.write([doomed], commit=False)
    await outbox.write([kept])
    relay = outbox.relay(producer, FAST, [probe_topic])
    await relay.start()
    try:
        records = await read_topic(probe_topic.name, 1, settle=0.3)
    finally:
        await relay.stop()
    assert ids_of(records) == [kept.id]
    assert records[0].key == b"entity-1"
    assert await outbox.unsent() == 0


async def test_relay_killed_mid_batch_loses_nothing(
    outbox: Outbox,
    producer: EventProducer,
    probe_topic: TopicSpec,
    read_topic: Callable[..., Awaitable[list[Any]]],
    make_event: Callable[..., Event[ProbeEvent]],
) -> None:
    events = [make_event(probe_topic.name, i) for i in range(20)]
    await outbox.write(events)
    options = RelayOptions(batch_size=5, poll_interval=0.5, stop_grace_s=0.1)
    first = outbox.relay(producer, options, [probe_topic])
    acked = asyncio.Event()

    async def die_before_marking(refs: list[Any]) -> None:  # the broker has acked the batch
        acked.set()
        await asyncio.Event().wait()

    first._mark_sent = die_before_marking  # type: ignore[method-assign]
    await first.start()
    await asyncio.wait_for(acked.wait(), 10)
    await first.stop()  # grace runs out: the task is cancelled between send and mark
    assert await outbox.unsent() == 20

    second = outbox.relay(producer, FAST, [probe_topic])
    await second.start()
    try:
        records = await read_topic(probe_topic.name, 25, settle=0.3)
    finally:
        await second.stop()
    ids = ids_of(records)
    assert first_occurrences(ids) == [e.id for e in events]
    duplicates = {i for i, n in Counter(ids).items() if n > 1}
    assert duplicates == {e.id for e in events[:5]}  # only the batch that was never marked
    assert await outbox.unsent() == 0


async def test_broker_outage_keeps_events_and_delivers_in_order(
    outbox: Outbox,
    producer: EventProducer,
    probe_topic: TopicSpec,
    controllable_stack: NativeStack,
    read_topic: Callable[..., Awaitable[list[Any]]],
    make_event: Callable[..., Event[ProbeEvent]],
    until: Callable[..., Awaitable[None]],
) -> None:
    async def all_sent() -> bool:
        return await outbox.unsent() == 0

    relay = outbox.relay(producer, FAST, [probe_topic])
    await relay.start()
    try:
        await outbox.write([make_event(probe_topic.name, 0)])
        await until(all_sent, what="the event before the outage")

        kafka = controllable_stack.servers["kafka"]
        await asyncio.to_thread(kafka.stop, 0.5)  # tansu lingers on SIGTERM: kill it soon
        try:
            events = [make_event(probe_topic.name, i) for i in range(1, 11)]
            for event in events:  # one transaction each, as requests would
                await outbox.write([event])
            # Longer than the producer's request timeout: the relay's sends fail meanwhile.
            await asyncio.sleep(2.0)
            assert await outbox.unsent() == 10
        finally:
            await asyncio.to_thread(kafka.start)
            await asyncio.to_thread(kafka.wait_ready)
        await until(all_sent, within=20, what="delivery after the broker came back")
    finally:
        await relay.stop()
    # The local broker keeps topics in memory: only what was sent after the restart is there.
    records = await read_topic(probe_topic.name, 10, settle=0.3)
    assert first_occurrences(ids_of(records)) == [e.id for e in events]


async def test_replicas_take_turns_and_deliver_everything_once_in_order(
    outbox: Outbox,
    producer: EventProducer,
    probe_topic: TopicSpec,
    read_topic: Callable[..., Awaitable[list[Any]]],
    make_event: Callable[..., Event[ProbeEvent]],
    until: Callable[..., Awaitable[None]],
) -> None:
    relays = [outbox.relay(producer, FAST, [probe_topic]) for _ in range(3)]
    for relay in relays:
        await relay.start()
    try:
        events = [make_event(probe_topic.name, i) for i in range(30)]
        for event in events:
            await outbox.write([event])

        async def all_sent() -> bool:
            return await outbox.unsent() == 0

        await until(all_sent, what="the replicas to drain the outbox")
        assert sum(relay.leading for relay in relays) == 1
        records = await read_topic(probe_topic.name, 30, settle=0.3)
    finally:
        for relay in relays:
            await relay.stop()
    assert ids_of(records) == [e.id for e in events]  # nothing sent twice by two replicas


async def test_pg_relay_wakes_on_notify_not_on_the_poll(
    pg_pool: Any,
    pg_dsn: str,
    producer: EventProducer,
    probe_topic: TopicSpec,
    read_topic: Callable[..., Awaitable[list[Any]]],
    make_event: Callable[..., Event[ProbeEvent]],
    until: Callable[..., Awaitable[None]],
) -> None:
    # The poll would take a minute: only a notification can deliver within the read's patience.
    sleepy = RelayOptions(poll_interval=60, active_for_s=0.1)
    relay = PgOutboxRelay(pg_dsn, producer, options=sleepy, topics=[probe_topic])
    await relay.start()
    try:

        async def listening() -> bool:
            return bool(await pg_pool.fetchval("SELECT listening FROM event_outbox_relay"))

        await until(listening, what="the relay to ask for notifications")
        await asyncio.sleep(0.2)  # asleep now
        outbox = PgOutbox(pg_pool, pg_dsn)
        event = make_event(probe_topic.name, 1)
        await outbox.write([event])
        records = await read_topic(probe_topic.name, 1, within=5)
        assert ids_of(records) == [event.id]
    finally:
        await relay.stop()


async def test_mongo_relay_wakes_on_its_process_commit_and_polls_otherwise(
    mongo_outbox: MongoOutbox,
    producer: EventProducer,
    probe_topic: TopicSpec,
    read_topic: Callable[..., Awaitable[list[Any]]],
    make_event: Callable[..., Event[ProbeEvent]],
) -> None:
    # A commit elsewhere waits for the poll (a minute here: it stays unsent); the committing
    # process's wake() sends it at once.
    sleepy = RelayOptions(poll_interval=60, active_for_s=0.1)
    relay = MongoOutboxRelay(mongo_outbox.db, producer, options=sleepy, topics=[probe_topic])
    await relay.start()
    try:
        await asyncio.sleep(0.5)  # idle, asleep on the poll
        event = make_event(probe_topic.name, 1)
        await mongo_outbox.write([event])
        await asyncio.sleep(1.0)
        assert await mongo_outbox.unsent() == 1
        relay.wake()
        records = await read_topic(probe_topic.name, 1, within=5)
        assert ids_of(records) == [event.id]
    finally:
        await relay.stop()

    # And the poll alone delivers, within its interval.
    polling = RelayOptions(poll_interval=0.3, active_for_s=0.1)
    relay = MongoOutboxRelay(mongo_outbox.db, producer, options=polling, topics=[probe_topic])
    await relay.start()
    try:
        await asyncio.sleep(0.5)
        later = make_event(probe_topic.name, 2)
        await mongo_outbox.write([later])
        records = await read_topic(probe_topic.name, 2, within=5)
        assert ids_of(records) == [event.id, later.id]
    finally:
        await relay.stop()
