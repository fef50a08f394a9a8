"""Upsert, Search, Delete and Embed through gRPC, against real PostgreSQL and Qdrant."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import numpy as np
from google.protobuf import struct_pb2, timestamp_pb2
from prometheus_client import REGISTRY

from aether.memory.v1 import memory_pb2
from aether_memory import repository

NOTES = {
    "cat": "My cat sleeps on the sofa all afternoon.",
    "stocks": "Tesla shares dropped eight percent after the earnings call.",
    "pasta": "The pasta recipe needs garlic, olive oil and parmesan.",
}


def record(record_id: str, text: str, **metadata: Any) -> memory_pb2.Record:
    meta = struct_pb2.Struct()
    meta.update(metadata)
    return memory_pb2.Record(id=record_id, text=text, metadata=meta)


def embedded_total() -> float:
    return (
        REGISTRY.get_sample_value("aether_memory_texts_embedded_total", {"embedder": "local"})
        or 0.0
    )


def stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


async def test_upsert_search_delete_round_trip(memory: Any) -> None:
    me = memory.user()
    stored = await memory.upsert(
        me, "memories", *(record(k, v, topic=k, n=1) for k, v in NOTES.items()), "no id given"
    )
    assert stored.ids[:3] == ["cat", "stocks", "pasta"]
    assert len(stored.ids[3]) == 36  # a generated UUID
    assert stored.embedded == 4

    hits = await memory.search(me, "memories", "Which stock fell after earnings?")
    assert hits[0].record.id == "stocks"
    assert hits[0].record.text == NOTES["stocks"]
    assert hits[0].record.user_id == me
    assert dict(hits[0].record.metadata) == {"topic": "stocks", "n": 1}
    assert abs(hits[0].record.created_at.ToDatetime(UTC) - datetime.now(UTC)).total_seconds() < 60
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(hits) == 4

    assert len(await memory.search(me, "memories", "cooking", limit=2)) == 2

    deleted = await memory.stub.Delete(
        memory_pb2.DeleteRequest(namespace="memories", ids=["stocks", "never-existed"]),
        metadata=memory.auth(me),
    )
    assert deleted.deleted == 1
    again = await memory.stub.Delete(
        memory_pb2.DeleteRequest(namespace="memories", ids=["stocks"]), metadata=memory.auth(me)
    )
    assert again.deleted == 0  # idempotent
    hits = await memory.search(me, "memories", "Which stock fell after earnings?")
    assert "stocks" not in [hit.record.id for hit in hits]
    assert len(hits) == 3


async def test_unchanged_text_is_not_embedded_again(memory: Any) -> None:
    me = memory.user()
    first = await memory.upsert(me, "memories", record("a", "Buy more index funds", v=1))
    assert first.embedded == 1

    before = embedded_total()
    same = await memory.upsert(me, "memories", record("a", "Buy more index funds", v=2))
    assert same.embedded == 0
    assert embedded_total() == before  # the model was not called
    hit = (await memory.search(me, "memories", "index funds"))[0]
    assert dict(hit.record.metadata) == {"v": 2}  # metadata still replaced

    before = embedded_total()
    changed = await memory.upsert(
        me, "memories", record("a", "Sell every bond before summer", v=3), record("b", "new")
    )
    assert changed.embedded == 2
    assert embedded_total() == before + 2  # searches count too: measured around the call
    hit = (await memory.search(me, "memories", "selling bonds"))[0]
    assert (hit.record.id, hit.record.text) == ("a", "Sell every bond before summer")
    # The creation time of a replaced record is kept.
    assert (
        hit.record.created_at == (await memory.search(me, "memories", "bonds"))[0].record.created_at
    )


async def test_search_filters_by_user_time_and_score(memory: Any) -> None:
    alice, bob, reader = memory.user("alice"), memory.user("bob"), memory.user("reader")
    writer = {"perms": ["memory:read", "memory:write", "memory:admin"]}
    first = datetime.now(UTC)
    await memory.upsert(alice, "knowledge", record("k-cat", NOTES["cat"]), **writer)
    await memory.upsert(bob, "knowledge", record("k-pasta", NOTES["pasta"]), **writer)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await memory.upsert(bob, "knowledge", record("k-stocks", NOTES["stocks"]), **writer)

    def ids(hits: list[Any]) -> set[str]:
        return {hit.record.id for hit in hits}

    everything = await memory.search(reader, "knowledge", "anything at all", limit=50)
    assert ids(everything) == {"k-cat", "k-pasta", "k-stocks"}

    by_bob = await memory.search(reader, "knowledge", "a cat", user_id=bob)
    assert ids(by_bob) == {"k-pasta", "k-stocks"}
    assert {hit.record.user_id for hit in by_bob} == {bob}

    recent = await memory.search(reader, "knowledge", "a cat", created_after=stamp(middle))
    assert ids(recent) == {"k-stocks"}
    older = await memory.search(reader, "knowledge", "a cat", created_before=stamp(middle))
    assert ids(older) == {"k-cat", "k-pasta"}
    window = await memory.search(
        reader,
        "knowledge",
        "a cat",
        created_after=stamp(first),
        created_before=stamp(middle),
        user_id=alice,
    )
    assert ids(window) == {"k-cat"}

    query = "a sleepy cat lying on the couch"
    unfiltered = await memory.search(reader, "knowledge", query)
    assert unfiltered[0].record.id == "k-cat"
    threshold = (unfiltered[0].score + unfiltered[1].score) / 2
    confident = await memory.search(reader, "knowledge", query, min_score=threshold)
    assert ids(confident) == {"k-cat"}
    assert all(hit.score >= threshold for hit in confident)


async def test_embed_returns_the_models_unit_vectors(memory: Any) -> None:
    response = await memory.stub.Embed(
        memory_pb2.EmbedRequest(
            texts=[NOTES["cat"], "A kitten naps on the couch every day.", NOTES["stocks"]]
        ),
        metadata=memory.auth(memory.user()),
    )
    assert response.model == "all-MiniLM-L6-v2"
    assert response.dimensions == 384
    vectors = np.array([list(v.values) for v in response.vectors], dtype=np.float32)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


async def test_rows_and_points_agree(memory: Any) -> None:
    """PostgreSQL holds the record, Qdrant the point with the filter fields, under one id."""
    me = memory.user()
    await memory.upsert(me, "memories", record("n1", "Remember the dentist on Friday"))
    async with memory.app.database.connection() as conn:
        row = await conn.fetchrow(
            "SELECT point_id, text_sha256, user_id, owner_scope FROM memory_records WHERE id = 'n1'"
        )
    assert row["point_id"] == repository.point_id("memories", me, "n1")
    assert row["text_sha256"] == repository.text_digest("Remember the dentist on Friday")
    assert (row["user_id"], row["owner_scope"]) == (me, me)
    payload = await memory.app.index.payload("memories", row["point_id"])
    assert payload is not None
    assert payload["user_id"] == me
    assert isinstance(payload["created_at"], float)


async def test_an_in_memory_index_works_the_same(start_memory: Any) -> None:
    """MEMORY_QDRANT_LOCATION=":memory:": Qdrant Edge in a temporary directory."""
    memory = await start_memory(qdrant_location=":memory:")
    me = memory.user()
    await memory.upsert(me, "memories", *NOTES.values())
    hits = await memory.search(me, "memories", "garlic and cheese", limit=1)
    assert [hit.record.text for hit in hits] == [NOTES["pasta"]]


async def test_a_lost_index_is_rebuilt_from_postgres(start_memory: Any) -> None:
    """A start that has to create the collections (":memory:" after a restart, a wiped Qdrant)
    re-embeds what PostgreSQL holds, so searches find it again."""
    first = await start_memory(qdrant_location=":memory:")
    me = first.user()
    await first.upsert(me, "memories", *(record(k, v) for k, v in NOTES.items()))
    await first.upsert(me, "knowledge", "Diversify across asset classes", roles=["admin"])

    def reindexed(namespace: str) -> float:
        sample = REGISTRY.get_sample_value(
            "aether_memory_records_reindexed_total", {"namespace": namespace}
        )
        return sample or 0.0

    before = reindexed("memories"), reindexed("knowledge")
    second = await start_memory(qdrant_location=":memory:")  # same database, an empty index
    await second.app.rebuild.wait(60)
    assert (reindexed("memories"), reindexed("knowledge")) == (before[0] + 3, before[1] + 1)
    hits = await second.search(me, "memories", "garlic and cheese", limit=1)
    assert [hit.record.text for hit in hits] == [NOTES["pasta"]]
    hits = await second.search(second.user(), "knowledge", "spread your investments")
    assert [hit.record.user_id for hit in hits] == [me]
    # The rebuilt point is current: the same text is not embedded again.
    assert (await second.upsert(me, "memories", record("pasta", NOTES["pasta"]))).embedded == 0


async def test_a_shard_that_does_not_load_is_rebuilt_from_postgres(
    start_memory: Any, tmp_path: Any
) -> None:
    """A damaged Qdrant Edge shard is moved aside at start and its records embedded again."""
    location = str(tmp_path / "edge")
    first = await start_memory(qdrant_location=location)
    me = first.user()
    await first.upsert(me, "memories", *(record(k, v) for k, v in NOTES.items()))
    prefix = first.settings.collection_prefix
    await first.app.index.stop()
    for part in (tmp_path / "edge" / f"{prefix}memories" / "gen-1" / "segments").rglob("*"):
        if part.is_file():
            part.write_bytes(b"\0")

    second = await start_memory(qdrant_location=location, collection_prefix=prefix)
    assert second.app.index.created == ["memories"]
    await second.app.rebuild.wait(60)
    hits = await second.search(me, "memories", "garlic and cheese", limit=1)
    assert [hit.record.text for hit in hits] == [NOTES["pasta"]]
