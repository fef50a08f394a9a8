"""The vector index: one collection per namespace (`<prefix><namespace>`), cosine, behind one
interface with two engines:

- `EdgeIndex` (edge_index.py): Qdrant Edge, the Qdrant server's engine in this process, on a
  directory. The embedded default: `make dev`, tests, a single-node install.
- `QdrantIndex` (qdrant_index.py): qdrant-client against a Qdrant server, by URL (production).

The app picks by the location (a URL: a server). Points carry only what searches filter on (user_id,
room_id, created_at as epoch seconds), each with a payload index; texts and metadata are read
from PostgreSQL, the source of truth, so a point left behind by a crash never surfaces.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aether_memory.embeddings import Vectors

KEYWORD_FIELDS = ("user_id", "room_id")
TIME_FIELD = "created_at"


@dataclass(frozen=True, slots=True)
class Point:
    id: uuid.UUID
    user_id: str
    room_id: str
    created_at: datetime

    def payload(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "room_id": self.room_id,
            TIME_FIELD: self.created_at.timestamp(),
        }


@dataclass(frozen=True, slots=True)
class Hit:
    point_id: uuid.UUID
    score: float


@dataclass(frozen=True, slots=True)
class Filters:
    user_id: str | None = None
    room_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def keywords(self) -> list[tuple[str, str]]:
        """The exact-match conditions, as (field, value)."""
        pairs = (("user_id", self.user_id), ("room_id", self.room_id))
        return [(key, value) for key, value in pairs if value is not None]

    def time_range(self) -> tuple[float | None, float | None] | None:
        """created_at's [gte, lt) bounds in epoch seconds, or None when unbounded."""
        if self.created_after is None and self.created_before is None:
            return None
        after, before = self.created_after, self.created_before
        return (after.timestamp() if after else None, before.timestamp() if before else None)


@dataclass(frozen=True, slots=True)
class IndexBuild:
    """What building a namespace's index now did (RebuildIndex): the points in it once live,
    how many HNSW covers, whether a build ran (`built`) or one running was joined (`joined`)."""

    engine: str
    points: int
    indexed: int
    built: bool
    joined: bool
    detail: str


class VectorIndex(Protocol):
    """What the service, the rebuild and the tests use of an index (a runner component)."""

    name: str
    namespaces: tuple[str, ...]
    # Namespaces whose collection this start had to create (empty: rebuilt from PostgreSQL).
    created: list[str]

    def collection(self, namespace: str) -> str: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def ready(self) -> bool: ...
    async def upsert(self, namespace: str, points: Sequence[Point], vectors: Vectors) -> None: ...
    async def delete(self, namespace: str, point_ids: Sequence[uuid.UUID]) -> None: ...
    async def delete_user(self, namespace: str, user_id: str) -> None: ...
    async def search(
        self,
        namespace: str,
        vector: Sequence[float],
        *,
        filters: Filters,
        limit: int,
        min_score: float | None,
    ) -> list[Hit]: ...
    async def count(self, namespace: str, filters: Filters) -> int: ...
    async def payload(self, namespace: str, point_id: uuid.UUID) -> dict[str, Any] | None: ...
    async def build_index(self, namespace: str) -> IndexBuild:
        """Build the namespace's search index now and wait for it (operators: RebuildIndex).
        Raises `Unavailable` when the build fails or the engine is away (retry)."""
        ...

    async def drop(self) -> None:
        """Delete every namespace's collection (tests leave a shared location as they found it)."""


def is_server(location: str) -> bool:
    return location.startswith(("http://", "https://"))
