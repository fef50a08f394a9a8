"""Qdrant Edge's own duties: index builds off the event loop (a copy optimized in a child process,
swapped in with the writes made meanwhile), crash safety (kill -9 during upserts and during a
build), a shard that does not load, and one process per directory."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from aether_devstack import testkit
from aether_memory.edge_index import EdgeIndex
from aether_memory.index import Filters, Point

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# 384 dims: the local model's size; 8,000 of them fill a segment past Edge's indexing threshold.
DIMENSIONS = 384
RNG = np.random.default_rng(7)


def vectors(count: int) -> np.ndarray:
    raw = RNG.standard_normal((count, DIMENSIONS)).astype(np.float32)
    unit: np.ndarray = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    return unit


def points(count: int, user: str = "ann") -> list[Point]:
    return [Point(uuid.uuid4(), user, "", T0) for _ in range(count)]


def edge_index(location: Path, index_after: int = 20_000, check_s: float = 10.0) -> EdgeIndex:
    return EdgeIndex(
        str(location),
        prefix="t_",
        namespaces=["memories"],
        dimensions=DIMENSIONS,
        index_after=index_after,
        check_interval_s=check_s,
    )


async def fill(index: EdgeIndex, count: int, batch: int = 1000) -> list[Point]:
    stored: list[Point] = []
    for _ in range(0, count, batch):
        chunk = points(batch)
        await index.upsert("memories", chunk, vectors(batch))
        stored += chunk
    return stored


async def test_a_build_runs_off_the_event_loop_and_keeps_the_writes_made_meanwhile(
    tmp_path: Path,
) -> None:
    index = edge_index(tmp_path)
    await index.start()
    try:
        before = await fill(index, 8000)
        assert index.unindexed("memories") == 8000  # searched exactly, for now

        build = asyncio.create_task(index.optimize("memories"))
        build_started = time.perf_counter()
        written: list[Point] = []
        deleted: list[Point] = []
        searches, longest_gap, last = 0, 0.0, time.perf_counter()
        query = vectors(1)[0].tolist()
        while not build.done():  # writes, searches and deletes while it builds
            chunk = points(5)
            await index.upsert("memories", chunk, vectors(5))
            written += chunk
            deleted.append(before[len(deleted)])
            await index.delete("memories", [deleted[-1].id])
            await index.search("memories", query, filters=Filters(), limit=5, min_score=None)
            searches += 1
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            longest_gap, last = max(longest_gap, now - last), now
        assert await build
        build_s = time.perf_counter() - build_started

        assert index.generation("memories") == 2
        assert [p.name for p in tmp_path.joinpath("t_memories").glob("gen-*")] == ["gen-2"]
        assert index.unindexed("memories") <= len(written)  # HNSW built over the 8,000
        assert searches > 10
        assert len(written) > 10
        # The event loop kept serving: no pause near the build's length (an optimize() on the
        # loop would be one pause as long as the build).
        assert longest_gap < build_s / 3, (longest_gap, build_s)
        assert await index.count("memories", Filters()) == 8000 + len(written) - len(deleted)
        for kept in [*written, before[-1]]:
            assert await index.payload("memories", kept.id) is not None
        for gone in deleted:
            assert await index.payload("memories", gone.id) is None
        hits = await index.search(
            "memories", query, filters=Filters(user_id="ann"), limit=3, min_score=None
        )
        assert len(hits) == 3
    finally:
        await index.stop()

    reopened = edge_index(tmp_path)  # the swapped-in generation is what a restart loads
    await reopened.start()
    try:
        assert reopened.generation("memories") == 2
        assert await reopened.count("memories", Filters()) == 8000 + len(written) - len(deleted)
    finally:
        await reopened.stop()


async def test_the_index_builds_itself_once_enough_points_are_unindexed(tmp_path: Path) -> None:
    index = edge_index(tmp_path, index_after=8000, check_s=0.05)
    await index.start()
    try:
        await fill(index, 7000)
        await asyncio.sleep(0.3)
        assert index.generation("memories") == 1  # below index_after: no build
        await fill(index, 1000)
        await testkit.eventually(
            lambda: index.generation("memories") == 2, within=120, what="a build"
        )
        assert index.unindexed("memories") == 0
    finally:
        await index.stop()


# A child process that upserts batches of 10 and prints each acknowledged batch's ids ("ack"); with
# "build" it also starts an index build once 8,000 points are in.
WRITER = """
import asyncio, json, sys, uuid
from datetime import UTC, datetime
import numpy as np
from aether_devstack import testkit
from aether_memory.edge_index import EdgeIndex
from aether_memory.index import Point

async def main(location, build):
    index = EdgeIndex(location, prefix="t_", namespaces=["memories"], dimensions=384)
    await index.start()
    rng = np.random.default_rng()
    written = 0
    while True:
        batch = [Point(uuid.uuid4(), "ann", "", datetime.now(UTC)) for _ in range(10)]
        await index.upsert("memories", batch, rng.standard_normal((10, 384)).astype(np.float32))
        written += 10
        print("ack", json.dumps([str(p.id) for p in batch]), flush=True)
        if build and written == 8000:
            asyncio.get_running_loop().create_task(index.optimize("memories"))
            print("building", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2] == "build"))
"""


async def acknowledged_until_killed(location: Path, *, build: bool) -> set[uuid.UUID]:
    """Run WRITER, SIGKILL it mid-stream (mid-build with `build`), return the acked ids."""
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        str(location),
        "build" if build else "plain",
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,  # its build child is killed with it
    )
    assert writer.stdout is not None
    acked: set[uuid.UUID] = set()
    building_since: float | None = None
    try:
        while True:
            line = await asyncio.wait_for(writer.stdout.readline(), 60)
            assert line, "the writer died"
            if line.strip() == b"building":
                building_since = time.monotonic()
            if not line.startswith(b"ack "):  # its logs
                continue
            acked |= {uuid.UUID(i) for i in json.loads(line.removeprefix(b"ack "))}
            if building_since is None and not build and len(acked) >= 3000:
                break
            if building_since is not None and time.monotonic() - building_since > 0.5:
                break
    finally:
        os.killpg(writer.pid, 9)
        await writer.wait()
    return acked


@pytest.mark.parametrize("during", ["upserts", "a build"])
async def test_kill_9_loses_no_acknowledged_point(tmp_path: Path, during: str) -> None:
    acked = await acknowledged_until_killed(tmp_path, build=during == "a build")

    index = edge_index(tmp_path)
    await index.start()
    try:
        assert index.created == []  # recovered from its WAL, not created anew
        assert index.generation("memories") == 1  # the unfinished build is not live...
        assert [p.name for p in (tmp_path / "t_memories").glob("gen-*")] == ["gen-1"]  # ...nor kept
        for point_id in acked:
            assert await index.payload("memories", point_id) is not None
        assert await index.count("memories", Filters()) >= len(acked)
    finally:
        await index.stop()


async def test_a_shard_that_does_not_load_is_moved_aside_and_created_anew(
    tmp_path: Path,
) -> None:
    index = edge_index(tmp_path)
    await index.start()
    await fill(index, 10, batch=10)
    await index.stop()
    for segment_file in (tmp_path / "t_memories" / "gen-1" / "segments").rglob("*"):
        if segment_file.is_file():
            segment_file.write_bytes(b"\0")

    again = edge_index(tmp_path)
    await again.start()
    try:
        assert again.created == ["memories"]  # so the rebuild re-embeds it from PostgreSQL
        assert again.generation("memories") == 2
        assert [p.name.split("-")[0] for p in (tmp_path / "t_memories").glob("broken-*")] == [
            "broken"
        ]
        assert await again.count("memories", Filters()) == 0
    finally:
        await again.stop()


async def test_one_process_per_directory(tmp_path: Path) -> None:
    first = edge_index(tmp_path)
    await first.start()
    try:
        with pytest.raises(RuntimeError, match="Qdrant server"):
            await edge_index(tmp_path).start()
    finally:
        await first.stop()
    second = edge_index(tmp_path)  # free again once the first stopped
    await second.start()
    await second.stop()


async def test_a_shard_loaded_with_enough_unindexed_points_is_built(tmp_path: Path) -> None:
    """Points written by another process (a restore, a bulk load) are indexed after a start."""
    writer = edge_index(tmp_path)
    await writer.start()
    await fill(writer, 8000)
    await writer.stop()

    index = edge_index(tmp_path, index_after=8000, check_s=0.05)
    await index.start()
    try:
        await testkit.eventually(
            lambda: index.generation("memories") == 2, within=120, what="a build"
        )
    finally:
        await index.stop()
