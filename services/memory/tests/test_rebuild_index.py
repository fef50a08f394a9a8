"""RebuildIndex (operators: the admin role or the worker's token) against the service's real
engine: a build now through the periodic builds' path (Qdrant Edge: a copy built in a child
process, swapped in), counted, its records searchable after; a build already running is joined,
not doubled; everyone else is refused."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from aether.memory.v1 import memory_pb2
from aether_common.errors import Forbidden, Unauthenticated, ValidationFailed
from aether_common.identity import ON_BEHALF_OF_KEY
from aether_devstack import testkit
from aether_memory.edge_index import EdgeIndex
from aether_memory.index import Point

Metadata = tuple[tuple[str, str], ...]
WRITER = {"perms": ["memory:read", "memory:write", "memory:admin"]}


def service(memory: Any, name: str) -> Metadata:
    """A service token's metadata, as auth issues it (subject `service:<name>`)."""
    return testkit.bearer_metadata(memory.token(f"service:{name}", roles=["service"], perms=[]))


def builds(namespace: str) -> float:
    value = REGISTRY.get_sample_value(
        "aether_memory_index_builds_total", {"namespace": namespace, "outcome": "built"}
    )
    return value or 0.0


async def rebuild(memory: Any, namespace: str, metadata: Metadata) -> Any:
    return await memory.stub.RebuildIndex(
        memory_pb2.RebuildIndexRequest(namespace=namespace), metadata=metadata, timeout=120
    )


def edge(memory: Any) -> EdgeIndex:
    if not isinstance(memory.app.index, EdgeIndex):
        pytest.skip("the session's index is a Qdrant server (test_index covers its builds)")
    return memory.app.index


async def test_the_worker_builds_a_namespace_and_its_records_stay_searchable(
    memory: Any,
) -> None:
    index = edge(memory)
    admin = memory.user("admin")
    texts = ["Margin calls happen when equity falls too low.", "Dividends are paid quarterly."]
    await memory.upsert(admin, "knowledge", *texts, **WRITER)
    generation, counted = index.generation("knowledge"), builds("knowledge")

    answer = await rebuild(memory, "knowledge", service(memory, "worker"))

    assert (answer.namespace, answer.engine, answer.built, answer.joined) == (
        "knowledge",
        "qdrant-edge",
        True,
        False,
    )
    assert answer.points == 2
    assert answer.duration_ms > 0
    assert index.generation("knowledge") == generation + 1  # the built copy is live
    assert f"generation {generation + 1}" in answer.detail
    assert builds("knowledge") == counted + 1
    # Only the asked namespace was rebuilt.
    assert index.generation("memories") == 1
    hits = await memory.search(memory.user("reader"), "knowledge", "margin call")
    assert hits[0].record.text == texts[0]
    assert len(hits) == 2


async def test_a_build_already_running_is_joined_not_doubled(memory: Any) -> None:
    index = edge(memory)
    counted = builds("memories")
    worker, admin = service(memory, "worker"), memory.admin(memory.user("ops"))

    answers = await asyncio.gather(
        rebuild(memory, "memories", worker), rebuild(memory, "memories", admin)
    )

    assert sorted(a.joined for a in answers) == [False, True]
    assert all(a.built for a in answers)
    assert builds("memories") == counted + 1
    assert index.generation("memories") == 2


async def test_a_build_puts_a_full_segment_under_hnsw(memory: Any) -> None:
    """8,000 points (past Edge's indexing threshold) are searched exactly until the build."""
    index = edge(memory)
    rng = np.random.default_rng(3)
    raw = rng.standard_normal((8000, index.dimensions)).astype(np.float32)
    vectors = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    now = datetime.now(UTC)
    for start in range(0, 8000, 1000):
        points = [Point(uuid.uuid4(), "sender", "room", now) for _ in range(1000)]
        await index.upsert("chat", points, vectors[start : start + 1000])
    assert index.unindexed("chat") == 8000

    answer = await rebuild(memory, "chat", service(memory, "worker"))

    assert (answer.points, answer.built) == (8000, True)
    assert answer.indexed == 8000
    assert index.unindexed("chat") == 0


async def test_only_operators_may_rebuild(memory: Any, kit: Any) -> None:
    alice = memory.user("alice")
    refused = {
        "a user": memory.auth(alice),
        "a knowledge writer": memory.auth(alice, **WRITER),
        "another service": service(memory, "ai"),
        "the worker acting for a user": (*service(memory, "worker"), (ON_BEHALF_OF_KEY, alice)),
    }
    for who, metadata in refused.items():
        error = await kit.failure(rebuild(memory, "memories", metadata))
        assert isinstance(error, Forbidden), who
        assert error.error_code == "operators_only", who

    error = await kit.failure(
        memory.stub.RebuildIndex(memory_pb2.RebuildIndexRequest(namespace="memories"))
    )
    assert isinstance(error, Unauthenticated)

    error = await kit.failure(rebuild(memory, "notes", service(memory, "worker")))
    assert isinstance(error, ValidationFailed)
    assert "namespace" in error.field_errors


async def test_the_operator_services_are_a_setting(start_memory: Any, kit: Any) -> None:
    memory = await start_memory(operator_services=["ops-bot"])
    error = await kit.failure(rebuild(memory, "memories", service(memory, "worker")))
    assert isinstance(error, Forbidden)
    answer = await rebuild(memory, "memories", service(memory, "ops-bot"))
    assert answer.namespace == "memories"
