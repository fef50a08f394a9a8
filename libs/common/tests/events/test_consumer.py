"""EventConsumer against the real broker, with PostgreSQL and MongoDB idempotency stores."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind
from prometheus_client import REGISTRY
from pymongo.asynchronous.database import AsyncDatabase

from aether.events.v1.envelope_pb2 import DeadLetter
from aether.testing.v1.probe_pb2 import EchoRequest, ProbeEvent
from aether_common.events import (
    ConsumerOptions,
    Event,
    EventConsumer,
    EventProducer,
    HandleContext,
    MongoIdempotencyStore,
    PgIdempotencyStore,
    TopicSpec,
    dlq_topic,
    envelope_headers,
)
from aether_common.events.idempotency import PROCESSED_COLLECTION
from aether_common.telemetry import configure_telemetry
from aether_devstack.servers import free_port

# Short session timeout: the local broker completes a group join in about that long.
FAST = ConsumerOptions(
    max_attempts=3,
    fetch_max_wait_ms=10,  # the local broker holds a fetch this long even with records ready
    backoff_s=0.01,
    session_timeout_ms=1000,
    heartbeat_interval_ms=100,
    stop_grace_s=2.0,
)
PgHandler = Callable[[Event[ProbeEvent], HandleContext[Any]], Awaitable[None]]
MakeEvent = Callable[..., Event[ProbeEvent]]
ReadTopic = Callable[..., Awaitable[list[Any]]]
MakeConsumer = Callable[..., Awaitable[EventConsumer[Any]]]
Until = Callable[..., Awaitable[None]]


@pytest.fixture
async def consumers() -> AsyncIterator[list[EventConsumer[Any]]]:
    started: list[EventConsumer[Any]] = []
    yield started
    await asyncio.gather(*(consumer.stop() for consumer in started))


@pytest.fixture
def pg_consumer(
    kafka: str,
    pg_pool: Any,
    probe_topic: TopicSpec,
    topic_prefix: str,
    consumers: list[EventConsumer[Any]],
) -> MakeConsumer:
    async def make(handler: PgHandler, options: ConsumerOptions = FAST) -> EventConsumer[Any]:
        consumer = EventConsumer(
            kafka, topic_prefix + "g", PgIdempotencyStore(pg_pool), options=options
        )
        consumer.add_handler(probe_topic.name, ProbeEvent, handler)
        await consumer.start()
        consumers.append(consumer)
        return consumer

    return make


async def record_in_pg(event: Event[ProbeEvent], ctx: HandleContext[Any]) -> None:
    await ctx.tx.execute(
        "INSERT INTO handled (event_id, seq) VALUES ($1, $2)", event.id, event.payload.sequence
    )


async def handled_seqs(pg_pool: Any) -> list[int]:
    return [r["seq"] for r in await pg_pool.fetch("SELECT seq FROM handled ORDER BY seq")]


async def committed(kafka: str, group: str, tp: TopicPartition) -> int | None:
    probe = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        offset: int | None = await probe.committed(tp)
        return offset
    finally:
        await probe.stop()


async def test_failing_handler_is_retried_then_parked_on_the_dlq(
    pg_consumer: MakeConsumer,
    pg_pool: Any,
    producer: EventProducer,
    probe_topic: TopicSpec,
    make_event: MakeEvent,
    read_topic: ReadTopic,
    until: Until,
    kafka: str,
    topic_prefix: str,
) -> None:
    before, bad, after = (make_event(probe_topic.name, i) for i in (1, 2, 3))
    attempts: list[int] = []

    async def handler(event: Event[ProbeEvent], ctx: HandleContext[Any]) -> None:
        await record_in_pg(event, ctx)  # rolled back with each failed attempt
        if event.id == bad.id:
            attempts.append(ctx.attempt)
            raise RuntimeError("boom")

    for event in (before, bad, after):  # published first, so they arrive as one batch
        await producer.publish(event)
    consumer = await pg_consumer(handler)

    async def others_handled() -> bool:
        return await handled_seqs(pg_pool) == [1, 3]

    await until(others_handled, what="the events around the poison one")
    # The batch attempt counts as the first; its neighbours were rolled back with it and
    # handled again on their own, once each (the table's primary key would refuse a second).
    assert attempts == [1, 2, 3]

    [parked] = await read_topic(dlq_topic(probe_topic.name), 1)
    letter = DeadLetter.FromString(parked.value)
    assert (letter.event.id, letter.attempts, letter.error) == (bad.id, 3, "RuntimeError: boom")
    assert (letter.original_topic, letter.consumer_group) == (probe_topic.name, topic_prefix + "g")
    assert ProbeEvent.FromString(letter.event.data) == bad.payload
    headers = dict(parked.headers)
    assert headers["dlq_error"] == b"RuntimeError: boom"
    assert headers["ce_id"] == bad.id.encode()
    assert parked.key == b"entity-1"

    await consumer.stop()
    tp = TopicPartition(probe_topic.name, parked.partition)
    assert await committed(kafka, topic_prefix + "g", tp) == letter.original_offset + 2


async def test_a_datastore_outage_in_a_handler_is_retried_until_it_passes_never_parked(
    pg_consumer: MakeConsumer,
    pg_pool: Any,
    producer: EventProducer,
    probe_topic: TopicSpec,
    make_event: MakeEvent,
    until: Until,
    topic_prefix: str,
) -> None:
    event = make_event(probe_topic.name, 1)
    outages_met = 0

    async def handler(event: Event[ProbeEvent], ctx: HandleContext[Any]) -> None:
        nonlocal outages_met
        if outages_met < 2 * FAST.max_attempts:  # more tries than a failing record gets
            outages_met += 1
            # A real outage: nothing listens there (connection refused).
            await asyncpg.connect(f"postgresql://x@127.0.0.1:{free_port()}/x", timeout=2)
        await record_in_pg(event, ctx)

    await producer.publish(event)
    await pg_consumer(handler)

    async def handled() -> bool:
        return await handled_seqs(pg_pool) == [1]

    await until(handled, what="the event, once the datastore is back")
    assert outages_met == 2 * FAST.max_attempts
    labels = {"topic": probe_topic.name, "group": topic_prefix + "g"}
    parked = REGISTRY.get_sample_value(
        "aether_kafka_consumed_total", {**labels, "outcome": "dead_lettered"}
    )
    assert parked is None  # the record says nothing wrong: it is not the DLQ's


async def test_duplicate_delivery_is_handled_once(
    pg_consumer: MakeConsumer,
    pg_pool: Any,
    producer: EventProducer,
    probe_topic: TopicSpec,
    make_event: MakeEvent,
    until: Until,
    topic_prefix: str,
) -> None:
    calls: Counter[str] = Counter()

    async def handler(event: Event[ProbeEvent], ctx: HandleContext[Any]) -> None:
        calls[event.id] += 1
        await record_in_pg(event, ctx)

    await pg_consumer(handler)
    twice, marker = make_event(probe_topic.name, 1), make_event(probe_topic.name, 2)
    for event in (twice, twice, marker):  # a producer retry or a relay replay looks like this
        await producer.publish(event)

    async def marker_handled() -> bool:
        return 2 in await handled_seqs(pg_pool)

    await until(marker_handled, what="the marker event")
    assert calls == {twice.id: 1, marker.id: 1}
    assert await handled_seqs(pg_pool) == [1, 2]

    async def caught_up() -> bool:
        lags = [
            REGISTRY.get_sample_value(
                "aether_kafka_consumer_lag",
                {
                    "topic": probe_topic.name,
                    "partition": str(p),
                    "group": topic_prefix + "g",
                },
            )
            for p in range(probe_topic.partitions)
        ]
        return 0 in lags and all(lag in (0, None) for lag in lags)

    await until(caught_up, what="the lag gauge to reach 0")


async def test_offsets_are_committed_only_after_handling(
    pg_consumer: MakeConsumer,
    pg_pool: Any,
    producer: EventProducer,
    probe_topic: TopicSpec,
    make_event: MakeEvent,
    until: Until,
    kafka: str,
    topic_prefix: str,
) -> None:
    events = [make_event(probe_topic.name, i) for i in range(10)]
    deliveries = [await producer.send_envelope(e.to_envelope()) for e in events]
    partition = (await deliveries[0]).partition
    offsets = [(await d).offset for d in deliveries]
    stuck = asyncio.Event()
    first_run: list[int] = []

    async def crashes_at_five(event: Event[ProbeEvent], ctx: HandleContext[Any]) -> None:
        await record_in_pg(event, ctx)
        first_run.append(event.payload.sequence)
        if event.payload.sequence == 5:
            stuck.set()
            await asyncio.Event().wait()  # hangs until the process "dies"

    first = await pg_consumer(crashes_at_five)
    await asyncio.wait_for(stuck.wait(), 15)
    done = await committed(kafka, topic_prefix + "g", TopicPartition(probe_topic.name, partition))
    assert done is None or done <= offsets[5]  # never past the record in flight
    await first.abort()  # a crash: no finishing, no commit
    # Whatever committed in the store is a prefix without event 5 (its write rolled back; so did
    # the rest of its batch transaction, if it was handled in one).
    survived = await handled_seqs(pg_pool)
    assert survived == list(range(len(survived)))
    assert 5 not in survived

    second_run: list[int] = []

    async def healthy(event: Event[ProbeEvent], ctx: HandleContext[Any]) -> None:
        await record_in_pg(event, ctx)
        second_run.append(event.payload.sequence)

    await pg_consumer(healthy)

    async def all_handled() -> bool:
        return len(await handled_seqs(pg_pool)) == 10

    await until(all_handled, within=15, what="every event after the restart")
    assert await handled_seqs(pg_pool) == list(range(10))
    # Everything came again (no offset was committed); what the store had was recognised.
    assert second_run == [seq for seq in range(10) if seq not in survived]


async def test_malformed_records_go_straight_to_the_dlq(
    pg_consumer: MakeConsumer,
    pg_pool: Any,
    producer: EventProducer,
    probe_topic: TopicSpec,
    make_event: MakeEvent,
    read_topic: ReadTopic,
    until: Until,
    kafka: str,
) -> None:
    calls: list[int] = []

    async def handler(event: Event[ProbeEvent], ctx: HandleContext[Any]) -> None:
        calls.append(event.payload.sequence)
        await record_in_pg(event, ctx)

    await pg_consumer(handler)
    valid = make_event(probe_topic.name, 9).to_envelope()
    bad_payload = make_event(probe_topic.name, 1).to_envelope()
    wrong_schema = make_event(probe_topic.name, 2).to_envelope()
    wrong_schema.data_schema = EchoRequest.DESCRIPTOR.full_name
    raw = AIOKafkaProducer(bootstrap_servers=kafka)
    await raw.start()
    try:
        key = b"entity-1"
        await raw.send_and_wait(probe_topic.name, b"not an event", key=key)
        await raw.send_and_wait(
            probe_topic.name, b"\xff\xff\xff", key=key, headers=envelope_headers(bad_payload)
        )
        await raw.send_and_wait(
            probe_topic.name, wrong_schema.data, key=key, headers=envelope_headers(wrong_schema)
        )
    finally:
        await raw.stop()
    await producer.send_envelope(valid)

    async def valid_handled() -> bool:
        return await handled_seqs(pg_pool) == [9]

    await until(valid_handled, what="the valid event behind the malformed ones")
    assert calls == [9]
    parked = await read_topic(dlq_topic(probe_topic.name), 3)
    letters = [DeadLetter.FromString(r.value) for r in parked]
    assert [letter.attempts for letter in letters] == [0, 0, 0]
    assert "MalformedEvent: missing header(s)" in letters[0].error
    assert "not a valid aether.testing.v1.ProbeEvent" in letters[1].error
    assert "expected 'aether.testing.v1.ProbeEvent'" in letters[2].error
    assert letters[0].event.data == b"not an event"


async def test_mongo_store_handles_a_duplicate_once(
    kafka: str,
    mongo_db: AsyncDatabase[dict[str, Any]],
    producer: EventProducer,
    probe_topic: TopicSpec,
    make_event: MakeEvent,
    until: Until,
    topic_prefix: str,
    consumers: list[EventConsumer[Any]],
) -> None:
    store = MongoIdempotencyStore(mongo_db)
    await store.ensure_indexes()
    await mongo_db.create_collection("handled")
    calls: Counter[str] = Counter()

    async def handler(event: Event[ProbeEvent], ctx: HandleContext[Any]) -> None:
        calls[event.id] += 1
        await mongo_db["handled"].insert_one({"_id": event.id}, session=ctx.tx)

    consumer = EventConsumer(kafka, topic_prefix + "g", store, options=FAST)
    consumer.add_handler(probe_topic.name, ProbeEvent, handler)
    await consumer.start()
    consumers.append(consumer)
    twice, marker = make_event(probe_topic.name, 1), make_event(probe_topic.name, 2)
    for event in (twice, twice, marker):
        await producer.publish(event)

    async def marker_handled() -> bool:
        return await mongo_db["handled"].find_one({"_id": marker.id}) is not None

    await until(marker_handled, what="the marker event")
    assert calls == {twice.id: 1, marker.id: 1}
    assert await mongo_db["handled"].count_documents({}) == 2


async def test_handled_ids_are_forgotten_after_the_retention(
    pg_consumer: MakeConsumer,
    pg_pool: Any,
    mongo_db: AsyncDatabase[dict[str, Any]],
    producer: EventProducer,
    probe_topic: TopicSpec,
    make_event: MakeEvent,
    until: Until,
    topic_prefix: str,
) -> None:
    group = topic_prefix + "g"
    await pg_pool.execute(
        "INSERT INTO processed_events (consumer_group, event_id, processed_at) VALUES "
        "($1, 'old', now() - interval '8 days'), ($1, 'recent', now() - interval '6 days')",
        group,
    )
    await pg_consumer(record_in_pg, replace(FAST, purge_every_s=0.1))
    event = make_event(probe_topic.name, 1)
    await producer.publish(event)

    async def old_forgotten() -> bool:
        rows = await pg_pool.fetch(
            "SELECT event_id FROM processed_events WHERE consumer_group = $1", group
        )
        return {r["event_id"] for r in rows} == {"recent", event.id}

    await until(old_forgotten, what="the 8-day-old id purged, the others kept")

    # The Mongo store forgets the same way (besides its TTL index).
    store = MongoIdempotencyStore(mongo_db)
    now = datetime.now(UTC)
    await mongo_db[PROCESSED_COLLECTION].insert_many(
        [
            {"_id": "g:old", "processed_at": now - timedelta(days=8)},
            {"_id": "g:recent", "processed_at": now - timedelta(days=6)},
        ]
    )
    assert await store.purge(timedelta(days=7)) == 1
    assert [d["_id"] async for d in mongo_db[PROCESSED_COLLECTION].find({})] == ["g:recent"]


async def test_rebalance_commits_before_handing_partitions_over(
    pg_consumer: MakeConsumer,
    pg_pool: Any,
    producer: EventProducer,
    probe_topic: TopicSpec,
    make_event: MakeEvent,
    until: Until,
) -> None:
    calls: Counter[int] = Counter()
    members: Counter[str] = Counter()

    def slow(member: str) -> PgHandler:
        async def handle(event: Event[ProbeEvent], ctx: HandleContext[Any]) -> None:
            calls[event.payload.sequence] += 1
            members[member] += 1
            await record_in_pg(event, ctx)
            await asyncio.sleep(0.05)

        return handle

    events = [make_event(probe_topic.name, i, subject=f"entity-{i}") for i in range(60)]
    for event in events:
        await producer.send_envelope(event.to_envelope())
    await producer.flush()
    small_batches = replace(FAST, batch_size=5)  # so the hand-over finds work left to move
    await pg_consumer(slow("first"), small_batches)

    async def some_handled() -> bool:
        return len(await handled_seqs(pg_pool)) >= 5

    await until(some_handled, what="the first member to start")
    # The second member joins: partitions move while the first is busy.
    await pg_consumer(slow("second"), small_batches)

    async def all_handled() -> bool:
        return len(await handled_seqs(pg_pool)) == 60

    await until(all_handled, within=20, what="both members to finish")
    assert members["first"] > 0
    assert members["second"] > 0
    # A record handled before the hand-over was committed, so the new owner never saw it.
    assert max(calls.values()) == 1


async def test_handler_runs_in_the_trace_of_the_request_that_made_the_event(
    pg_consumer: MakeConsumer,
    producer: EventProducer,
    probe_topic: TopicSpec,
    make_event: MakeEvent,
) -> None:
    exporter = InMemorySpanExporter()
    configure_telemetry("aether-test", span_exporter=exporter)
    seen: asyncio.Future[SpanContext] = asyncio.get_running_loop().create_future()

    async def handler(event: Event[ProbeEvent], ctx: HandleContext[Any]) -> None:
        seen.set_result(trace.get_current_span().get_span_context())

    await pg_consumer(handler)
    with trace.get_tracer("tests").start_as_current_span("request") as request:
        event = make_event(probe_topic.name, 1)  # captures the request's trace context
    await producer.publish(event)
    inside = await asyncio.wait_for(seen, 10)
    assert inside.trace_id == request.get_span_context().trace_id
    [span] = [s for s in exporter.get_finished_spans() if s.name.endswith(" process")]
    assert span.kind is SpanKind.CONSUMER
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
