"""Retention archives (archives.py): the `retention.archive` job type against a real chat service
in-process (MongoDB, Redis, S3 from the devstack plugin; the kit's auth peer signs the worker's
service token), run with a JobContext double; chat away is a retryable failure; the daily
schedule submits one job per day however many replicas run it (real PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether_chat import ids
from aether_chat.app import ChatApp
from aether_chat.config import ChatSettings
from aether_common.grpc.client import create_channel
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port
from aether_devstack.testkit import AppRunner, JwksPeer, SigningKey
from aether_worker.archives import (
    TYPE_NAME,
    ArchivedService,
    ArchiveParams,
    ArchiveSchedule,
    ChatArchiveClient,
    retention_archive_type,
)
from aether_worker.handler import JobFailed


@pytest.fixture
async def chat(
    aether_endpoints: Endpoints,
    mongo_db_name: str,
    redis_prefix: str,
    topic_prefix: str,
    jwks_peer: JwksPeer,
) -> AsyncIterator[ChatApp]:
    """The chat service in-process (its own database, prefix and archive bucket)."""
    settings = ChatSettings.model_validate(
        {
            "environment": "dev",
            "mongo_url": aether_endpoints.mongo_url,
            "mongo_database": mongo_db_name,
            "redis_url": aether_endpoints.redis_url,
            "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
            "auth_grpc_target": jwks_peer.address,
            "redis_prefix": redis_prefix,
            "fanout_prefix": redis_prefix + "fanout:",
            "topic_prefix": topic_prefix,
            "s3_endpoint": aether_endpoints.s3_endpoint,
            "s3_access_key": aether_endpoints.s3_access_key,
            "s3_secret_key": aether_endpoints.s3_secret_key,
            "s3_bucket": testkit.unique_name("aether-t-chat-"),
        }
    )
    app = ChatApp(settings, grpc_host="127.0.0.1", grpc_port=0)
    runner = AppRunner()
    try:
        await runner.start(app.components(events=False))
        yield app
    finally:
        await runner.stop()


async def _old_room(chat: ChatApp, key: SigningKey) -> tuple[str, list[str]]:
    """A room with two messages sent 400 days ago and one today; the old ones' ids."""
    owner = "user-" + ids.new_id()[-8:]
    auth = testkit.bearer_metadata(
        testkit.mint(key, testkit.access_claims(sub=owner, perms=["chat:read", "chat:write"]))
    )
    async with create_channel(chat.grpc.address, default_timeout=10) as channel:
        stub: Any = chat_pb2_grpc.ChatServiceStub(channel)
        room = (
            await stub.CreateRoom(
                chat_pb2.CreateRoomRequest(name="r", visibility=chat_pb2.ROOM_VISIBILITY_PUBLIC),
                metadata=auth,
            )
        ).room
        for i in range(3):
            await stub.SendMessage(
                chat_pb2.SendMessageRequest(
                    room_id=room.room_id, content=f"m{i}", client_msg_id=f"c{i}"
                ),
                metadata=auth,
            )
    messages = chat.database.db["messages"]
    old = datetime.now(UTC) - timedelta(days=400)
    moved = []
    async for doc in messages.find({"room_id": room.room_id, "seq": {"$lte": 2}}):
        await messages.delete_one({"_id": doc["_id"]})
        doc |= {"_id": ids.new_id(int(old.timestamp() * 1000)), "created_at": old}
        await messages.insert_one(doc)
        moved.append(doc["_id"])
    return room.room_id, moved


async def test_the_job_archives_chat_as_the_worker_and_returns_the_counts(
    chat: ChatApp,
    signing_key: SigningKey,
    job_context: Callable[..., Any],
    mint_service: Callable[[str], str],
) -> None:
    room_id, old_ids = await _old_room(chat, signing_key)
    client = ChatArchiveClient(chat.grpc.address, timeout_s=30)
    await client.start()
    tokens: list[str] = []

    async def token() -> str:
        tokens.append(mint_service("worker"))
        return tokens[-1]

    job_type = retention_archive_type({ArchivedService.CHAT: client}, token=token)
    ctx = job_context()
    try:
        params = job_type.params.model_validate({"service": "chat"})
        result = await job_type.run(ctx, params)
    finally:
        await client.stop()

    assert len(tokens) == 1
    assert result["service"] == "chat"
    assert (result["archived"], result["deleted"], result["rooms"], result["objects"]) == (
        2,
        2,
        1,
        1,
    )
    (key,) = result["object_keys"]
    assert key.endswith(f"/{room_id}.parquet")
    assert result["bucket"] == chat.settings.s3_bucket
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert cutoff.time() == datetime.min.time()
    assert cutoff < datetime.now(UTC) - timedelta(days=365)
    assert ctx.progress_log[0][0] == 0
    assert ctx.progress_log[-1] == (100, "2 archived, 2 deleted")
    # The archive is chat's: the messages are in its object and gone from its database.
    assert await chat.archive_bucket.exists(key)
    messages = chat.database.db["messages"]
    assert await messages.count_documents({"_id": {"$in": old_ids}}) == 0
    assert await messages.count_documents({"room_id": room_id}) == 1


async def test_chat_away_is_retryable_and_a_refusal_is_not(
    chat: ChatApp,
    signing_key: SigningKey,
    job_context: Callable[..., Any],
    mint_service: Callable[[str], str],
) -> None:
    away = ChatArchiveClient(f"127.0.0.1:{free_port()}", timeout_s=2)
    await away.start()

    async def worker_token() -> str:
        return mint_service("worker")

    job_type = retention_archive_type({ArchivedService.CHAT: away}, token=worker_token)
    params = ArchiveParams(service=ArchivedService.CHAT)
    try:
        with pytest.raises(JobFailed) as failed:
            await job_type.run(job_context(), params)
    finally:
        await away.stop()
    assert failed.value.code == "chat_unavailable"
    assert failed.value.retryable

    # Another service's token is refused by chat: retrying cannot fix that.
    present = ChatArchiveClient(chat.grpc.address, timeout_s=10)
    await present.start()

    async def alerts_token() -> str:
        return mint_service("alerts")

    refused_type = retention_archive_type({ArchivedService.CHAT: present}, token=alerts_token)
    try:
        with pytest.raises(JobFailed) as refused:
            await refused_type.run(job_context(), params)
    finally:
        await present.stop()
    assert refused.value.code == "operators_only"
    assert not refused.value.retryable

    # No identity of its own: the job cannot run.
    with pytest.raises(JobFailed) as anonymous:
        await retention_archive_type({ArchivedService.CHAT: present}, token=None).run(
            job_context(), params
        )
    assert anonymous.value.code == "no_service_identity"


def test_params_name_a_service_with_an_archive() -> None:
    job_type = retention_archive_type({}, token=None)
    assert job_type.name == TYPE_NAME
    assert not job_type.user_may_submit
    with pytest.raises(ValidationError) as unknown:
        job_type.params.model_validate({"service": "discussion"})
    assert unknown.value.errors()[0]["loc"] == ("service",)
    with pytest.raises(ValidationError) as naive:
        job_type.params.model_validate({"service": "chat", "before": "2025-01-01T00:00:00"})
    assert naive.value.errors()[0]["loc"] == ("before",)
    with pytest.raises(ValidationError):
        job_type.params.model_validate({"service": "chat", "extra": 1})
    parsed = ArchiveParams.model_validate({"service": "chat", "before": "2025-01-01T00:00:00Z"})
    assert parsed.before == datetime(2025, 1, 1, tzinfo=UTC)


async def test_the_schedule_submits_one_job_a_day_across_replicas(start_worker: Any) -> None:
    job_type = retention_archive_type({}, token=None)
    worker = await start_worker(job_types=[job_type], events=False)
    now = datetime(2026, 3, 4, 1, 30, tzinfo=UTC)

    def replica() -> ArchiveSchedule:
        return ArchiveSchedule(
            worker.app.service,
            worker.app.database,
            owner_id="service:worker",
            hour_utc=2,
            clock=lambda: now,
        )

    first, second = replica(), replica()
    assert await first.run_once() == []  # before 02:00 UTC
    now = now.replace(hour=2, minute=5)
    created = await first.run_once() + await second.run_once() + await first.run_once()
    assert len(created) == 1
    now += timedelta(days=1)
    assert len(await second.run_once()) == 1

    admin = worker.admin("ops")
    for job_id in created:
        job = await worker.get(admin, job_id)
        assert (job.type, job.owner_id, job.status) == (TYPE_NAME, "service:worker", "queued")
        assert '"service":"chat"' in job.params_json.replace(" ", "")
