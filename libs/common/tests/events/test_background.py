"""BackgroundConsumer: a service's start never waits for Kafka; the consumer keeps trying, then
joins and handles events; stop() ends it promptly either way."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from google.protobuf.empty_pb2 import Empty

from aether_common.events import BackgroundConsumer, EventConsumer, PgIdempotencyStore
from aether_common.events.idempotency import PROCESSED_EVENTS_DDL
from aether_devstack.servers import free_port


class Probe(BackgroundConsumer):
    def __init__(self, bootstrap: str, pool: Any) -> None:
        super().__init__(bootstrap, ["probe.topic.v1"], group_id="probe")
        self.pool = pool
        self.builds = 0
        self.prepared = 0
        self.retried = asyncio.Event()

    def build(self) -> EventConsumer[Any]:
        self.builds += 1
        if self.builds >= 2:
            self.retried.set()
        consumer = self.new_consumer(PgIdempotencyStore(self.pool))
        consumer.add_handler(self.topics[0], Empty, self.handle)
        return consumer

    async def handle(self, event: Any, ctx: Any) -> None:
        pass

    async def prepare(self) -> None:
        self.prepared += 1


async def test_keeps_trying_while_kafka_is_away_and_stops_promptly(pg_dsn: str) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    probe = Probe(nobody, pool)
    try:
        await probe.start()  # returns while the first attempt is still on its way
        assert probe.consumer is None
        assert await probe.ready()  # still trying counts as alive
        await asyncio.wait_for(probe.retried.wait(), 30)  # the failed start is retried
        assert probe.prepared == 0  # topics first: nothing else runs while Kafka is away
        assert probe.consumer is None
        await probe.stop()  # does not wait for Kafka either (the test's timeout would say)
        assert not await probe.ready()
    finally:
        await pool.close()


async def test_joins_when_kafka_answers(pg_dsn: str, kafka: str, topic_prefix: str) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await conn.execute(PROCESSED_EVENTS_DDL)
    probe = Probe(kafka, pool)
    probe.topics = [topic_prefix + "probe.topic.v1"]
    try:
        await probe.start()
        await probe.wait_running(60)
        assert probe.consumer is not None
        assert probe.builds == 1
        assert probe.prepared == 1
        assert await probe.ready()
    finally:
        await probe.stop()
        await pool.close()
    assert probe.consumer is None
