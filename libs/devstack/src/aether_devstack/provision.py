"""Talking to the local servers with their real clients: create what services declare, probe health.

Databases via asyncpg, topics via aiokafka's admin client, buckets via boto3; health by a real
round trip per server (SELECT 1, PING, metadata, ping, info, list buckets, SMTP NOOP), so "up"
means a client works, not just that a port is open.
"""

from __future__ import annotations

import asyncio
import smtplib
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

# Imported up front, not inside the probes: a slow import blocks the event loop and would make
# the other probes' timeouts fire.
import asyncpg
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from elasticsearch import AsyncElasticsearch
from pymongo import AsyncMongoClient

from aether_common.events.topics import TopicSpec
from aether_common.events.topics import ensure_topics as create_topics
from aether_devstack.catalog import DevError, ServiceSpec
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import HOST


def provision(endpoints: Endpoints, specs: Sequence[ServiceSpec]) -> None:
    """Create every declared database, topic and bucket that does not exist yet."""
    databases = [db for s in specs for db in s.postgres_databases]
    topics = [t for s in specs for t in s.topics]
    buckets = [b for s in specs for b in s.buckets]
    if databases:
        asyncio.run(ensure_databases(endpoints, databases))
    if topics:
        asyncio.run(ensure_topics(endpoints, topics))
    if buckets:
        ensure_buckets(endpoints, buckets)


async def ensure_databases(endpoints: Endpoints, names: Sequence[str]) -> None:
    conn = await asyncpg.connect(endpoints.postgres_dsn)
    try:
        for name in names:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')  # a checked [a-z0-9_] name
    finally:
        await conn.close()


async def drop_databases(endpoints: Endpoints, names: Sequence[str]) -> None:
    conn = await asyncpg.connect(endpoints.postgres_dsn)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def ensure_topics(endpoints: Endpoints, topics: Sequence[TopicSpec]) -> None:
    """The same creation services run at start (each topic with its DLQ), checked afterwards."""
    await create_topics(endpoints.kafka_bootstrap, topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
    await admin.start()
    try:
        absent = {t.name for t in topics} - set(await admin.list_topics())
        if absent:
            raise DevError(f"Kafka did not create topic(s): {', '.join(sorted(absent))}")
    finally:
        await admin.close()


def ensure_buckets(endpoints: Endpoints, buckets: Sequence[str]) -> None:
    client = s3_client(endpoints)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in buckets:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


def s3_client(endpoints: Endpoints) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2}),
        endpoint_url=endpoints.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=endpoints.s3_access_key,
        aws_secret_access_key=endpoints.s3_secret_key,
    )


# -- health
async def _postgres(e: Endpoints) -> None:
    conn = await asyncpg.connect(e.postgres_dsn, timeout=3)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


async def _redis(e: Endpoints) -> None:
    client = aioredis.from_url(e.redis_url, socket_timeout=3)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _kafka(e: Endpoints) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=e.kafka_bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


async def _mongo(e: Endpoints) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        e.mongo_url, serverSelectionTimeoutMS=3000
    )
    try:
        await client.admin.command("ping")
    finally:
        await client.close()


async def _elasticsearch(e: Endpoints) -> None:
    client = AsyncElasticsearch(e.elasticsearch_url, request_timeout=3)
    try:
        await client.info()
    finally:
        await client.close()


async def _s3(e: Endpoints) -> None:
    await asyncio.to_thread(lambda: s3_client(e).list_buckets())


async def _smtp(e: Endpoints) -> None:
    def noop() -> None:
        with smtplib.SMTP(e.smtp_host, e.smtp_port, timeout=3) as smtp:
            smtp.noop()

    await asyncio.to_thread(noop)


PROBES: dict[str, Callable[[Endpoints], Awaitable[None]]] = {
    "postgres": _postgres,
    "redis": _redis,
    "kafka": _kafka,
    "mongo": _mongo,
    "elasticsearch": _elasticsearch,
    "s3": _s3,
    "smtp": _smtp,
}


def server_addresses(e: Endpoints) -> dict[str, str]:
    return {
        "postgres": e.postgres_dsn,
        "redis": e.redis_url,
        "kafka": e.kafka_bootstrap,
        "mongo": e.mongo_url,
        "elasticsearch": e.elasticsearch_url,
        "s3": e.s3_endpoint,
        "smtp": f"{e.smtp_host}:{e.smtp_port}",
    }


async def probe_all(endpoints: Endpoints, per_server_s: float = 10.0) -> dict[str, str | None]:
    """Server name -> None when it answers its client, else a one-line reason."""

    async def one(name: str) -> str | None:
        try:
            async with asyncio.timeout(per_server_s):
                await PROBES[name](endpoints)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return reason[:160]
        return None

    results = await asyncio.gather(*(one(name) for name in PROBES))
    return dict(zip(PROBES, results, strict=True))


def http_healthy(port: int, path: str = "/healthz") -> bool:
    """A service's /healthz (alive) or /readyz (serving: every dependency and component up)
    answers 200."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False
