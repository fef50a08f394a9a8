"""The index interface, the same behaviour through both engines: Qdrant Edge (the embedded
default) and qdrant-client (a Qdrant server). No server runs here, so qdrant-client runs against
its local mode, its only offline stand-in, and also against a server when the session's
AETHER_QDRANT_LOCATION is a URL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from aether_devstack.endpoints import Endpoints
from aether_memory.edge_index import EdgeIndex
from aether_memory.index import Filters, Point, VectorIndex, is_server
from aether_memory.qdrant_index import QdrantIndex

DIMENSIONS = 8
T0 = datetime(2026, 1, 1, tzinfo=UTC)
Open = Callable[..., VectorIndex]


@pytest.fixture(params=["edge", "qdrant-local", "qdrant-server"])
def open_index(request: pytest.FixtureRequest, tmp_path: Path, aether_endpoints: Endpoints) -> Open:
    """A factory: the same location and prefix each call (a restart), `dimensions=` to change."""
    prefix = "t" + uuid.uuid4().hex[:10] + "_"
    engine = request.param
    if engine == "qdrant-server" and not is_server(aether_endpoints.qdrant_location):
        pytest.skip("no Qdrant server here (AETHER_QDRANT_LOCATION is not a URL)")

    def make(dimensions: int = DIMENSIONS) -> VectorIndex:
        namespaces = ["memories", "chat"]
        if engine == "edge":
            return EdgeIndex(
                str(tmp_path / "edge"), prefix=prefix, namespaces=namespaces, dimensions=dimensions
            )
        location = str(tmp_path / "local") if engine == "qdrant-local" else None
        return QdrantIndex(
            location or aether_endpoints.qdrant_location,
            prefix=prefix,
            namespaces=namespaces,
            dimensions=dimensions,
        )

    return make


@pytest.fixture
async def index(open_index: Open) -> AsyncIterator[VectorIndex]:
    started = open_index()
    await started.start()
    yield started
    await started.drop()
    await started.stop()


def unit(*components: float) -> np.ndarray:
    vector = np.zeros(DIMENSIONS, dtype=np.float32)
    vector[: len(components)] = components
    return vector / np.linalg.norm(vector)


def point(user: str, room: str = "", days: int = 0) -> Point:
    return Point(uuid.uuid4(), user, room, T0 + timedelta(days=days))


async def test_search_ranks_by_cosine_and_filters_by_user_room_and_time(
    index: VectorIndex,
) -> None:
    near, far, other, later = point("ann"), point("ann"), point("bob", "r1"), point("ann", "r1", 3)
    await index.upsert(
        "memories",
        [near, far, other, later],
        np.stack([unit(1, 0.1), unit(0.2, 1), unit(1), unit(1, 0.3)]),
    )
    query = unit(1).tolist()

    async def found(
        filters: Filters, limit: int = 10, min_score: float | None = None
    ) -> list[uuid.UUID]:
        hits = await index.search(
            "memories", query, filters=filters, limit=limit, min_score=min_score
        )
        return [hit.point_id for hit in hits]

    assert await found(Filters()) == [other.id, near.id, later.id, far.id]
    assert await found(Filters(), limit=2) == [other.id, near.id]
    assert await found(Filters(user_id="ann")) == [near.id, later.id, far.id]
    assert await found(Filters(room_id="r1")) == [other.id, later.id]
    assert await found(Filters(user_id="ann", room_id="r1")) == [later.id]
    assert await found(Filters(created_after=T0 + timedelta(days=1))) == [later.id]
    assert await found(Filters(created_before=T0 + timedelta(days=1))) == [
        other.id,
        near.id,
        far.id,
    ]
    assert await found(Filters(), min_score=0.9) == [other.id, near.id, later.id]
    assert await found(Filters(user_id="nobody")) == []
    hits = await index.search("memories", query, filters=Filters(), limit=1, min_score=None)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert await index.count("memories", Filters()) == 4
    assert await index.count("memories", Filters(user_id="ann")) == 3
    assert await index.count("chat", Filters()) == 0  # namespaces are separate collections
    assert await index.payload("memories", later.id) == {
        "user_id": "ann",
        "room_id": "r1",
        "created_at": (T0 + timedelta(days=3)).timestamp(),
    }
    assert await index.payload("memories", uuid.uuid4()) is None


async def test_upsert_overwrites_and_deletes_by_id_and_by_user(index: VectorIndex) -> None:
    ann1, ann2, bob = point("ann"), point("ann"), point("bob")
    await index.upsert("memories", [ann1, ann2, bob], np.stack([unit(1), unit(0, 1), unit(1)]))
    moved = Point(ann1.id, "ann", "r9", T0)
    await index.upsert("memories", [moved], np.stack([unit(0, 0, 1)]))
    assert await index.count("memories", Filters()) == 3
    assert (await index.payload("memories", ann1.id) or {})["room_id"] == "r9"
    hits = await index.search(
        "memories", unit(0, 0, 1).tolist(), filters=Filters(), limit=1, min_score=None
    )
    assert hits[0].point_id == ann1.id

    await index.delete("memories", [ann2.id, uuid.uuid4()])  # an unknown id is no error
    assert await index.payload("memories", ann2.id) is None
    await index.delete_user("memories", "ann")
    assert await index.count("memories", Filters(user_id="ann")) == 0
    assert await index.count("memories", Filters()) == 1


async def test_a_restart_keeps_the_points_and_creates_only_what_is_missing(
    open_index: Open,
) -> None:
    first = open_index()
    await first.start()
    assert sorted(first.created) == ["chat", "memories"]  # new: the rebuild re-embeds them
    kept = point("ann")
    await first.upsert("memories", [kept], np.stack([unit(1)]))
    await first.stop()

    second = open_index()
    await second.start()
    try:
        assert second.created == []
        assert await second.payload("memories", kept.id) is not None
        assert await second.ready()
    finally:
        await second.drop()
        await second.stop()


async def test_a_collection_of_another_vector_size_is_refused(open_index: Open) -> None:
    first = open_index()
    await first.start()
    await first.stop()
    changed_model = open_index(dimensions=DIMENSIONS * 2)
    with pytest.raises(RuntimeError, match="MEMORY_COLLECTION_PREFIX"):
        await changed_model.start()
    again = open_index()
    await again.start()
    await again.drop()
    await again.stop()


async def test_build_index_says_what_the_engine_did_and_keeps_every_point(
    index: VectorIndex,
) -> None:
    stored = [point("ann"), point("bob")]
    await index.upsert("memories", stored, np.stack([unit(1), unit(0, 1)]))

    build = await index.build_index("memories")

    assert build.points == 2
    assert build.detail
    if isinstance(index, EdgeIndex):  # a copy built in a child process and swapped in
        assert (build.engine, build.built, build.joined) == ("qdrant-edge", True, False)
        assert "generation 2" in build.detail
    else:  # the server's optimizer indexes by itself: nothing to build unless work is pending
        assert build.engine == "qdrant"
        assert build.built or "nothing pending" in build.detail
    hits = await index.search(
        "memories", unit(1).tolist(), filters=Filters(), limit=1, min_score=None
    )
    assert hits[0].point_id == stored[0].id
    assert await index.count("memories", Filters()) == 2
