"""Fixtures for the event tests: real Kafka, PostgreSQL and MongoDB from the devstack plugin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from aether.testing.v1.probe_pb2 import ProbeEvent
from aether_common.events import (
    OUTBOX_DDL,
    PROCESSED_EVENTS_DDL,
    Event,
    EventProducer,
    TopicSpec,
    ensure_topics,
)
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints

ReadTopic = Callable[..., Awaitable[list[Any]]]


@pytest.fixture
def kafka(aether_endpoints: Endpoints) -> str:
    return aether_endpoints.kafka_bootstrap


@pytest.fixture
async def probe_topic(kafka: str, topic_prefix: str) -> TopicSpec:
    spec = TopicSpec(topic_prefix + "aether.testing.probed.v1", partitions=3)
    await ensure_topics(kafka, [spec])
    return spec


@pytest.fixture
async def producer(kafka: str) -> AsyncIterator[EventProducer]:
    # A short request timeout so a stopped broker is noticed within the test's patience.
    producer = EventProducer(kafka, request_timeout_ms=1000, retry_backoff_ms=50)
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def pg_pool(pg_dsn: str) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    await pool.execute(OUTBOX_DDL + PROCESSED_EVENTS_DDL)
    await pool.execute("CREATE TABLE handled (event_id text PRIMARY KEY, seq bigint NOT NULL)")
    yield pool
    await pool.close()


@pytest.fixture
async def mongo_db(
    aether_endpoints: Endpoints, mongo_db_name: str
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(aether_endpoints.mongo_url)
    yield client[mongo_db_name]
    await client.drop_database(mongo_db_name)
    await client.aclose()


def probe(topic: str, sequence: int, subject: str = "entity-1") -> Event[ProbeEvent]:
    payload = ProbeEvent(entity_id=subject, sequence=sequence, body=f"event {sequence}")
    return Event(type=topic, subject=subject, payload=payload, source="tests")


@pytest.fixture
def make_event() -> Callable[..., Event[ProbeEvent]]:
    return probe


@pytest.fixture
def read_topic(kafka: str) -> ReadTopic:
    """`read_topic(topic, count, within=15, settle=0)`: the kit's, on this session's Kafka."""

    async def read(topic: str, count: int, within: float = 15.0, settle: float = 0.0) -> list[Any]:
        return await testkit.read_topic(kafka, topic, count, within, settle)

    return read


async def wait_for(
    condition: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "condition"
) -> None:
    await testkit.eventually(condition, within, what, every=0.02)


@pytest.fixture
def until() -> Callable[..., Awaitable[None]]:
    return wait_for
