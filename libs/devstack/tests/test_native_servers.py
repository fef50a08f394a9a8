"""Every backing server of the test stack answers its real client."""

from __future__ import annotations

import mailbox
import smtplib
import uuid
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import boto3
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from elasticsearch import AsyncElasticsearch
from pymongo import AsyncMongoClient

from aether_devstack.endpoints import Endpoints


async def test_postgres_answers_in_its_own_database(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == pg_dsn.rsplit("/", 1)[1]
    finally:
        await conn.close()


async def test_redis_answers(aether_endpoints: Endpoints, redis_prefix: str) -> None:
    client = aioredis.from_url(aether_endpoints.redis_url)
    try:
        await client.set(redis_prefix + "k", "v", ex=10)
        assert await client.get(redis_prefix + "k") == b"v"
    finally:
        await client.aclose()


async def test_kafka_round_trip(aether_endpoints: Endpoints, topic_prefix: str) -> None:
    topic = topic_prefix + "smoke"
    admin = AIOKafkaAdminClient(bootstrap_servers=aether_endpoints.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=aether_endpoints.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=aether_endpoints.kafka_bootstrap,
        group_id=topic_prefix + "g",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        record = await consumer.getone()
        assert (record.key, record.value) == (b"k1", b"hello")
    finally:
        await consumer.stop()


async def test_mongo_answers(aether_endpoints: Endpoints, mongo_db_name: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(aether_endpoints.mongo_url)
    try:
        coll = client[mongo_db_name]["things"]
        await coll.insert_one({"_id": "a", "n": 1})
        assert await coll.find_one({"_id": "a"}) == {"_id": "a", "n": 1}
    finally:
        await client.aclose()


async def test_elasticsearch_answers(aether_endpoints: Endpoints, index_prefix: str) -> None:
    es = AsyncElasticsearch(aether_endpoints.elasticsearch_url)
    try:
        index = index_prefix + "docs"
        await es.index(index=index, id="1", document={"title": "hello world"}, refresh=True)
        found = await es.search(index=index, query={"match": {"title": "hello"}})
        assert found["hits"]["total"]["value"] == 1
    finally:
        await es.close()


def test_s3_answers(aether_endpoints: Endpoints) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=aether_endpoints.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=aether_endpoints.s3_access_key,
        aws_secret_access_key=aether_endpoints.s3_secret_key,
    )
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"data")
    assert s3.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"data"


def test_smtp_delivers_to_the_maildir(aether_endpoints: Endpoints, maildir: Path) -> None:
    subject = f"hello {uuid.uuid4().hex}"
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@aether.test", "b@aether.test", subject
    msg.set_content("body")
    with smtplib.SMTP(aether_endpoints.smtp_host, aether_endpoints.smtp_port, timeout=5) as smtp:
        smtp.send_message(msg)
    subjects = [m["Subject"] for m in mailbox.Maildir(maildir, create=False)]
    assert subject in subjects


@pytest.mark.parametrize("server", ["kafka", "mongo", "elasticsearch", "s3", "smtp"])
def test_native_servers_restart(controllable_stack: object, server: str) -> None:
    from aether_devstack.servers import NativeStack, tcp_open

    assert isinstance(controllable_stack, NativeStack)
    controllable_stack.restart(server)
    assert tcp_open(controllable_stack.ports[server])
