"""Benchmark: PostgreSQL outbox -> relay -> Kafka -> EventConsumer, beside raw aiokafka.

    uv run python bench/events.py [--events N] [--latency-events M] [--rate R] [--per-tx K]

Starts its own broker (tansu, through aether_devstack) and uses the machine's PostgreSQL, unless
AETHER_KAFKA_BOOTSTRAP / AETHER_POSTGRES_DSN point elsewhere. Both pipelines run in this one
process on the same broker, in the same run:

- raw: AIOKafkaProducer (acks=all, linger 5 ms) -> AIOKafkaConsumer (fetch_max_wait_ms=10);
- outbox: a transaction per request writes its events with `outbox_pg.add_many` -> PgOutboxRelay
  -> EventConsumer with the PostgreSQL idempotency store (a store transaction per batch).

After a warm-up, M events paced at R/s give the latency (from just before the write or send to
the handler: p50/p95/p99), then bursts of N events as fast as possible give events/s (first
write to last handled): for the outbox once with one event per transaction (a request's
shape, bound by PostgreSQL commits) and once with K per transaction (bulk writes, which shows
what the relay and consumer sustain). Goal: outbox p95 < 50 ms and at least half the raw rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs published
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from aether.testing.v1.probe_pb2 import ProbeEvent
from aether_common.events import (
    OUTBOX_DDL,
    PROCESSED_EVENTS_DDL,
    ConsumerOptions,
    Event,
    EventConsumer,
    EventProducer,
    HandleContext,
    PgIdempotencyStore,
    PgOutboxRelay,
    TopicSpec,
    ensure_topics,
    outbox_pg,
)
from aether_common.logging import configure_logging

PARTITIONS = 3
BODY = "x" * 150  # ~200-byte events, as in docs/ENVIRONMENT's ceiling figure


@dataclass
class Result:
    name: str
    rate: float
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class Sink:
    """Collects arrival latencies and signals when the expected count has arrived."""

    def __init__(self) -> None:
        self.expected = 0
        self.latencies_ms: list[float] = []
        self.done = asyncio.Event()
        self.last_ns = 0

    def expect(self, count: int) -> None:
        self.expected, self.latencies_ms, self.last_ns = count, [], 0
        self.done.clear()

    def arrived(self, sent_at_ns: int) -> None:
        now = time.time_ns()
        self.latencies_ms.append((now - sent_at_ns) / 1e6)
        self.last_ns = now
        if len(self.latencies_ms) >= self.expected:
            self.done.set()


def payload(sequence: int) -> ProbeEvent:
    return ProbeEvent(
        entity_id=f"entity-{sequence % 64}", sequence=sequence, body=BODY, sent_at_ns=time.time_ns()
    )


async def burst(
    send: Callable[[range], Coroutine[Any, Any, None]],
    sink: Sink,
    count: int,
    concurrency: int,
    per_call: int = 1,
) -> float:
    """Send `count` events from `concurrency` workers, `per_call` events per call (one request
    transaction for the outbox); events/s from the first send until the last one arrives."""
    sink.expect(count)
    start = time.time_ns()
    chunks = iter(range(first, min(first + per_call, count)) for first in range(0, count, per_call))

    async def worker() -> None:
        for chunk in chunks:
            await send(chunk)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await asyncio.wait_for(sink.done.wait(), 120)
    return count / ((sink.last_ns - start) / 1e9)


async def paced(
    send: Callable[[range], Coroutine[Any, Any, None]], sink: Sink, count: int, rate: float
) -> list[float]:
    sink.expect(count)
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    for seq in range(count):
        delay = start + seq / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(range(seq, seq + 1)))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.wait_for(sink.done.wait(), 60)
    return sink.latencies_ms


def percentiles(values: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


async def run_raw(bootstrap: str, topic: str, args: argparse.Namespace) -> list[Result]:
    sink = Sink()
    async with AsyncExitStack() as stack:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
        )
        await producer.start()
        stack.push_async_callback(producer.stop)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=topic + ".g",
            auto_offset_reset="latest",
            fetch_max_wait_ms=10,
            session_timeout_ms=2000,
            heartbeat_interval_ms=200,
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)

        async def consume() -> None:
            async for record in consumer:
                sink.arrived(ProbeEvent.FromString(record.value).sent_at_ns)

        task = asyncio.create_task(consume())
        stack.callback(task.cancel)

        async def send(seqs: range) -> None:
            for seq in seqs:
                event = payload(seq)
                await producer.send(topic, event.SerializeToString(), key=event.entity_id.encode())

        await _warm_up(send, sink, args)
        p50, p95, p99 = percentiles(await paced(send, sink, args.latency_events, args.rate))
        rate = await burst(send, sink, args.events, args.writers)
        return [Result("raw aiokafka", rate, p50, p95, p99)]


async def run_outbox(
    bootstrap: str, dsn: str, topic: str, args: argparse.Namespace
) -> list[Result]:
    sink = Sink()
    async with AsyncExitStack() as stack:
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=args.writers + 4)
        stack.push_async_callback(pool.close)
        await pool.execute(OUTBOX_DDL + PROCESSED_EVENTS_DDL)
        producer = EventProducer(bootstrap, linger_ms=5)
        await producer.start()
        stack.push_async_callback(producer.stop)
        relay = PgOutboxRelay(dsn, producer, topics=[TopicSpec(topic, partitions=PARTITIONS)])
        await relay.start()
        stack.push_async_callback(relay.stop)

        async def handle(event: Event[ProbeEvent], ctx: HandleContext[Any]) -> None:
            sink.arrived(event.payload.sent_at_ns)

        consumer = EventConsumer(
            bootstrap,
            topic + ".g",
            PgIdempotencyStore(pool),
            options=ConsumerOptions(
                auto_offset_reset="latest",
                fetch_max_wait_ms=10,  # as the raw consumer: tansu holds a fetch this long
                session_timeout_ms=2000,
                heartbeat_interval_ms=200,
            ),
        )
        consumer.add_handler(topic, ProbeEvent, handle)
        await consumer.start()
        stack.push_async_callback(consumer.stop)

        async def write(seqs: range) -> None:  # one request: its state change's transaction
            events = [payload(seq) for seq in seqs]
            async with pool.acquire() as conn, conn.transaction():
                await outbox_pg.add_many(
                    conn,
                    [
                        Event(type=topic, subject=e.entity_id, payload=e, source="bench")
                        for e in events
                    ],
                )

        await _warm_up(write, sink, args)
        p50, p95, p99 = percentiles(await paced(write, sink, args.latency_events, args.rate))
        single = await burst(write, sink, args.events, args.writers)
        batched = await burst(write, sink, args.events, args.writers, args.per_tx)
        return [
            Result("outbox(pg), 1 event/tx", single, p50, p95, p99),
            Result(f"outbox(pg), {args.per_tx} events/tx", batched),
        ]


async def _warm_up(
    send: Callable[[range], Coroutine[Any, Any, None]], sink: Sink, args: argparse.Namespace
) -> None:
    """Until events flow end to end (the group has joined), then a second at the paced rate
    (so every pooled connection has prepared its statements)."""
    deadline = time.monotonic() + 30
    sink.expect(1)
    while not sink.done.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError("no event came through within 30 s")
        await send(range(1))
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # let stragglers of the warm-up arrive before measuring
    await paced(send, sink, int(args.rate), args.rate)


async def bench(args: argparse.Namespace, bootstrap: str, admin_dsn: str) -> list[Result]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    raw_topic, outbox_topic = f"{prefix}.raw.v1", f"{prefix}.outbox.v1"
    await ensure_topics(
        bootstrap,
        [
            TopicSpec(raw_topic, partitions=PARTITIONS),
            TopicSpec(outbox_topic, partitions=PARTITIONS),
        ],
    )
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{prefix}"')
    try:
        dsn = admin_dsn.rpartition("/")[0] + "/" + prefix
        raw = await run_raw(bootstrap, raw_topic, args)
        outbox = await run_outbox(bootstrap, dsn, outbox_topic, args)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{prefix}" WITH (FORCE)')
        await admin.close()
    return raw + outbox


def report(results: list[Result], args: argparse.Namespace) -> None:
    raw, single, batched = results
    loop = asyncio.get_event_loop_policy().__class__.__module__.split(".")[0]
    print(
        f"\nburst: {args.events} events from {args.writers} writers; latency: "
        f"{args.latency_events} events paced at {args.rate:.0f}/s, one per transaction; "
        f"{PARTITIONS} partitions; loop: {loop}"
    )
    print(f"{'pipeline':<30}{'events/s':>10}{'x raw':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for r in results:
        cells = [f"{v:>9.1f}" if v is not None else f"{'-':>9}" for v in (r.p50, r.p95, r.p99)]
        print(f"{r.name:<30}{r.rate:>10,.0f}{r.rate / raw.rate:>7.2f}" + "".join(cells))
    assert single.p95 is not None
    best = max(single.rate, batched.rate) / raw.rate
    print(
        f"goal p95 < 50 ms: {'met' if single.p95 < 50 else 'MISSED'} ({single.p95:.1f} ms); "
        f"rate >= 0.5 x raw: {'met' if best >= 0.5 else 'MISSED'} ({best:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="burst size (default 20000)")
    parser.add_argument("--latency-events", type=int, default=3_000)
    parser.add_argument("--rate", type=float, default=1_000, help="paced events/s (default 1000)")
    parser.add_argument(
        "--writers",
        type=int,
        default=16,
        help="concurrent senders / request transactions (default 16)",
    )
    parser.add_argument(
        "--per-tx",
        type=int,
        default=100,
        help="events per transaction in the batched burst (default 100)",
    )
    args = parser.parse_args()
    configure_logging("bench", "WARNING", json=False)
    try:
        import uvloop  # services run on uvloop (uvicorn[standard]); measure what they get

        uvloop.install()
    except ImportError:
        pass

    bootstrap = os.environ.get("AETHER_KAFKA_BOOTSTRAP")
    dsn = os.environ.get("AETHER_POSTGRES_DSN")
    stack = None
    if not bootstrap or not dsn:
        from aether_devstack.servers import (  # type: ignore[import-untyped]
            NativeStack,
            ensure_machine_servers,
        )

        ensure_machine_servers()
        stack = NativeStack(Path(tempfile.mkdtemp(prefix="aether-bench-")))
        kafka = stack.servers["kafka"]  # only the broker: the rest of the stack is not needed
        kafka.start()
        kafka.wait_ready()
        bootstrap = bootstrap or stack.endpoints.kafka_bootstrap
        dsn = dsn or stack.endpoints.postgres_dsn
    try:
        report(asyncio.run(bench(args, bootstrap, dsn)), args)
    finally:
        if stack is not None:
            stack.servers["kafka"].stop(grace=1)


if __name__ == "__main__":
    main()
