"""The AI service's PostgreSQL stores against the session's real servers (devstack plugin).

Each test gets its own PostgreSQL database (`pg_dsn`, migrated by `PostgresDatabase.start()`)
and Kafka topic prefix. Fixture names start with `store_` so they never clash with the service-level
fixtures of tests/conftest.py. Test modules cannot import each other here, so shared helpers
live on the `store_kit` fixture.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from aether_common.errors import AetherError
from aether_common.postgres import PostgresDatabase


@pytest.fixture
async def store_db(pg_dsn: str) -> AsyncIterator[PostgresDatabase]:
    db = PostgresDatabase(
        pg_dsn, service="ai", migrations=files("aether_ai") / "migrations", max_size=5
    )
    await db.start()
    try:
        yield db
    finally:
        await db.stop()


async def failure(call: Awaitable[Any]) -> AetherError:
    """The typed error `call` raised (the test fails when it raised none)."""
    try:
        await call
    except AetherError as error:
        return error
    raise AssertionError("expected an AetherError")


async def eventually(
    check: Callable[[], Awaitable[Any]], within: float = 20.0, every: float = 0.05
) -> Any:
    """Polls `check` until it returns something truthy; that value, or fails after `within`."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(every)


async def read_topic(bootstrap: str, topic: str, count: int, within: float = 20.0) -> list[Any]:
    """Records of `topic` from the beginning, with a real consumer, until `count` arrived."""
    deadline = time.monotonic() + within
    # A consumer learns the partitions of the topics that exist when it starts, not of one
    # created later (the relay creates its topics in the background): wait for it first.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while topic not in await admin.list_topics():
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"the consumer does not know {topic}"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        while len(records) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"got {len(records)} of {count} records from {topic}"
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.2) * 1000))
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


def percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


@dataclass(frozen=True)
class StoreKit:
    failure: Callable[[Awaitable[Any]], Awaitable[AetherError]]
    eventually: Callable[..., Awaitable[Any]]
    read_topic: Callable[..., Awaitable[list[Any]]]
    percentile_cont: Callable[[list[float], float], float]


@pytest.fixture
def store_kit() -> StoreKit:
    return StoreKit(failure, eventually, read_topic, percentile_cont)
