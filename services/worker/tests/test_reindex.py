"""Index rebuilds (reindex.py): the `memory.reindex` job type against a real memory service
in-process (PostgreSQL and its Qdrant engine from the devstack plugin; the kit's auth peer
signs the worker's service token), run with a JobContext double; memory away is a retryable
failure, a refusal is not."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from aether_common.lifecycle import Component
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port
from aether_devstack.testkit import AppRunner, JwksPeer, SigningKey
from aether_memory.app import MemoryApp
from aether_memory.config import MemorySettings
from aether_memory.edge_index import EdgeIndex
from aether_memory.embeddings import LocalEmbedder
from aether_memory.index import Point
from aether_worker.handler import JobFailed
from aether_worker.reindex import (
    TYPE_NAME,
    MemoryIndexClient,
    MemoryNamespace,
    ReindexParams,
    memory_reindex_type,
)


@pytest.fixture
async def memory(
    aether_endpoints: Endpoints, pg_dsn: str, topic_prefix: str, jwks_peer: JwksPeer
) -> AsyncIterator[MemoryApp]:
    """The memory service in-process (its own database and collection prefix; no consumer)."""
    settings = MemorySettings.model_validate(
        {
            "environment": "test",
            "database_url": pg_dsn,
            "qdrant_location": aether_endpoints.qdrant_location,
            "collection_prefix": "t" + uuid.uuid4().hex[:10] + "_",
            "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
            "topic_prefix": topic_prefix,
            "auth_grpc_target": jwks_peer.address,
            # RebuildIndex never asks chat.
            "chat_grpc_target": f"127.0.0.1:{free_port()}",
            "database_pool_size": 2,
        }
    )
    app = MemoryApp(settings, grpc_host="127.0.0.1", grpc_port=0, embedder=LocalEmbedder())
    runner = AppRunner()

    async def drop_collections(started: list[Component]) -> None:
        if app.index in started:  # leave the session's index location as it was
            await app.index.drop()

    try:
        await runner.start(app.components(events=False), before_stop=drop_collections)
        yield app
    finally:
        await runner.stop()


async def test_the_job_builds_every_namespace_as_the_worker(
    memory: MemoryApp,
    signing_key: SigningKey,
    job_context: Callable[..., Any],
    mint_service: Callable[[str], str],
) -> None:
    stored = [Point(uuid.uuid4(), "sender", "room", datetime.now(UTC)) for _ in range(3)]
    vectors = np.eye(3, memory.embeddings.dimensions, dtype=np.float32)
    await memory.index.upsert("chat", stored, vectors)
    client = MemoryIndexClient(memory.grpc.address, timeout_s=120)
    await client.start()
    tokens: list[str] = []

    async def token() -> str:
        tokens.append(mint_service("worker"))
        return tokens[-1]

    job_type = memory_reindex_type(client, token=token)
    ctx = job_context()
    try:
        result = await job_type.run(ctx, job_type.params.model_validate({"namespace": "all"}))
    finally:
        await client.stop()

    answers = result["namespaces"]
    assert list(answers) == ["memories", "knowledge", "chat"]
    assert len(tokens) == 3  # a fresh token per call: a long job outlives one
    assert [answer["points"] for answer in answers.values()] == [0, 0, 3]
    for answer in answers.values():
        assert answer["engine"] == memory.index.name
        assert not answer["joined"]
        assert answer["detail"]
    assert [percent for percent, _ in ctx.progress_log] == [0, 33, 66, 100]
    assert ctx.progress_log[1][1] == "building knowledge's index"
    assert ctx.artifacts == {}  # a reindex stores nothing in the worker's bucket
    if isinstance(memory.index, EdgeIndex):  # each namespace's built copy is live
        assert all(answer["built"] for answer in answers.values())
        assert all(memory.index.generation(ns) == 2 for ns in answers)


async def test_one_namespace_only(
    memory: MemoryApp,
    signing_key: SigningKey,
    job_context: Callable[..., Any],
    mint_service: Callable[[str], str],
) -> None:
    client = MemoryIndexClient(memory.grpc.address, timeout_s=120)
    await client.start()

    async def token() -> str:
        return mint_service("worker")

    try:
        result = await memory_reindex_type(client, token=token).run(
            job_context(), ReindexParams(namespace=MemoryNamespace.KNOWLEDGE)
        )
    finally:
        await client.stop()
    assert list(result["namespaces"]) == ["knowledge"]
    if isinstance(memory.index, EdgeIndex):
        assert (memory.index.generation("knowledge"), memory.index.generation("chat")) == (2, 1)


async def test_memory_away_is_retryable_and_a_refusal_is_not(
    memory: MemoryApp,
    signing_key: SigningKey,
    job_context: Callable[..., Any],
    mint_service: Callable[[str], str],
) -> None:
    params = ReindexParams(namespace=MemoryNamespace.MEMORIES)
    away = MemoryIndexClient(f"127.0.0.1:{free_port()}", timeout_s=2)
    await away.start()

    async def worker_token() -> str:
        return mint_service("worker")

    try:
        with pytest.raises(JobFailed) as failed:
            await memory_reindex_type(away, token=worker_token).run(job_context(), params)
    finally:
        await away.stop()
    assert failed.value.code == "memory_unavailable"
    assert failed.value.retryable

    # Another service's token is refused by memory: retrying cannot fix that.
    present = MemoryIndexClient(memory.grpc.address, timeout_s=30)
    await present.start()

    async def alerts_token() -> str:
        return mint_service("alerts")

    try:
        with pytest.raises(JobFailed) as refused:
            await memory_reindex_type(present, token=alerts_token).run(job_context(), params)
    finally:
        await present.stop()
    assert refused.value.code == "operators_only"
    assert not refused.value.retryable

    # No identity of its own: the job cannot run.
    with pytest.raises(JobFailed) as anonymous:
        await memory_reindex_type(present, token=None).run(job_context(), params)
    assert anonymous.value.code == "no_service_identity"
    assert not anonymous.value.retryable


def test_params_name_one_of_memorys_namespaces_or_all() -> None:
    job_type = memory_reindex_type(MemoryIndexClient("127.0.0.1:9"), token=None)
    assert job_type.name == TYPE_NAME
    assert not job_type.user_may_submit
    with pytest.raises(ValidationError) as unknown:
        job_type.params.model_validate({"namespace": "notes"})
    assert unknown.value.errors()[0]["loc"] == ("namespace",)
    with pytest.raises(ValidationError) as missing:
        job_type.params.model_validate({})
    assert missing.value.errors()[0]["loc"] == ("namespace",)
    with pytest.raises(ValidationError):
        job_type.params.model_validate({"namespace": "chat", "extra": 1})
    everything = ReindexParams.model_validate({"namespace": "all"})
    assert [ns.value for ns in everything.namespaces()] == ["memories", "knowledge", "chat"]
