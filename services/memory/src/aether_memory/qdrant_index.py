"""The index on a Qdrant server: AsyncQdrantClient by URL (production).

The same class also opens qdrant-client's local mode (a directory, or ":memory:"): no server
runs on the development machines, so the tests of this engine run there, its only offline
stand-in. `open_index` never picks local mode (it evaluates filters in Python: seconds at 100k).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import httpx
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from aether_common.errors import Unavailable
from aether_common.logging import get_logger
from aether_common.outages import RETRY_AFTER_S
from aether_memory.embeddings import OUTAGE_DETAIL, Vectors
from aether_memory.index import (
    KEYWORD_FIELDS,
    TIME_FIELD,
    Filters,
    Hit,
    IndexBuild,
    Point,
    is_server,
)

log = get_logger(__name__)

# A Qdrant server unreachable (ResponseHandlingException wraps the transport error), answering
# an error, or timing out: the index is away, not the request wrong.
_QDRANT_OUTAGES = (ResponseHandlingException, UnexpectedResponse, httpx.HTTPError)
# build_index: how often the collection's status is read while its optimizer runs.
BUILD_POLL_S = 0.5


@contextlib.contextmanager
def _outage_as_unavailable() -> Iterator[None]:
    try:
        yield
    except _QDRANT_OUTAGES as exc:
        log.warning("vector index unavailable", error=repr(exc))
        raise Unavailable(OUTAGE_DETAIL, retry_after=RETRY_AFTER_S) from exc


def _filter(filters: Filters) -> models.Filter | None:
    must: list[models.Condition] = [
        models.FieldCondition(key=key, match=models.MatchValue(value=value))
        for key, value in filters.keywords()
    ]
    if (bounds := filters.time_range()) is not None:
        must.append(
            models.FieldCondition(key=TIME_FIELD, range=models.Range(gte=bounds[0], lt=bounds[1]))
        )
    return models.Filter(must=must) if must else None


class QdrantIndex:
    """Component: the Qdrant client; creates the namespaces' collections at start."""

    name = "qdrant"

    def __init__(
        self,
        location: str,
        *,
        prefix: str,
        namespaces: Iterable[str],
        dimensions: int,
        api_key: str | None = None,
        timeout_s: int = 10,
        build_wait_s: float = 600.0,
    ) -> None:
        self.location = location
        self.prefix = prefix
        self.namespaces = tuple(namespaces)
        self.dimensions = dimensions
        self.is_server = is_server(location)
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._build_wait_s = build_wait_s
        self._client: AsyncQdrantClient | None = None
        # Namespaces whose collection this start had to create (empty: rebuilt from PostgreSQL).
        self.created: list[str] = []

    @property
    def client(self) -> AsyncQdrantClient:
        if self._client is None:
            raise RuntimeError("qdrant client not started")
        return self._client

    def collection(self, namespace: str) -> str:
        return self.prefix + namespace

    async def start(self) -> None:
        if self.is_server:
            client = AsyncQdrantClient(
                url=self.location, api_key=self._api_key, timeout=self._timeout_s
            )
        elif self.location == ":memory:":
            client = AsyncQdrantClient(location=":memory:")
        else:
            client = AsyncQdrantClient(path=self.location)
        self._client = client
        self.created = []
        try:
            for namespace in self.namespaces:
                if await self._ensure_collection(self.collection(namespace)):
                    self.created.append(namespace)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def ready(self) -> bool:
        if self._client is None:
            return False
        await self._client.get_collections()
        return True

    async def _ensure_collection(self, name: str) -> bool:
        """Create the collection if missing (True), or check its vector size (False)."""
        client = self.client
        if await client.collection_exists(name):
            info = await client.get_collection(name)
            vectors = info.config.params.vectors
            size = vectors.size if isinstance(vectors, models.VectorParams) else None
            if size != self.dimensions:
                raise RuntimeError(
                    f"Qdrant collection {name} holds vectors of size {size}, the embedder makes "
                    f"{self.dimensions}: a changed model needs a new MEMORY_COLLECTION_PREFIX"
                )
            return False
        await client.create_collection(
            name,
            vectors_config=models.VectorParams(
                size=self.dimensions, distance=models.Distance.COSINE
            ),
        )
        if self.is_server:  # local mode scans anyway, and warns about payload indexes
            for field in KEYWORD_FIELDS:
                await client.create_payload_index(name, field, models.PayloadSchemaType.KEYWORD)
            await client.create_payload_index(name, TIME_FIELD, models.PayloadSchemaType.FLOAT)
        log.info("qdrant collection created", collection=name, size=self.dimensions)
        return True

    # -- writes ---------------------------------------------------------------------------------
    async def upsert(self, namespace: str, points: Sequence[Point], vectors: Vectors) -> None:
        if not points:
            return
        with _outage_as_unavailable():
            await self.client.upsert(
                self.collection(namespace),
                points=[
                    models.PointStruct(
                        id=str(point.id),
                        vector=vector.tolist(),
                        payload=point.payload(),
                    )
                    for point, vector in zip(points, vectors, strict=True)
                ],
                wait=True,
            )

    async def delete(self, namespace: str, point_ids: Sequence[uuid.UUID]) -> None:
        if not point_ids:
            return
        with _outage_as_unavailable():
            await self.client.delete(
                self.collection(namespace),
                points_selector=models.PointIdsList(points=[str(p) for p in point_ids]),
                wait=True,
            )

    async def delete_user(self, namespace: str, user_id: str) -> None:
        with _outage_as_unavailable():
            await self.client.delete(
                self.collection(namespace),
                points_selector=models.FilterSelector(filter=_filter(Filters(user_id=user_id))),
                wait=True,
            )

    # -- reads ----------------------------------------------------------------------------------
    async def search(
        self,
        namespace: str,
        vector: Sequence[float],
        *,
        filters: Filters,
        limit: int,
        min_score: float | None,
    ) -> list[Hit]:
        with _outage_as_unavailable():
            response = await self.client.query_points(
                self.collection(namespace),
                query=list(vector),
                query_filter=_filter(filters),
                limit=limit,
                score_threshold=min_score,
                with_payload=False,
            )
        return [Hit(uuid.UUID(str(point.id)), point.score) for point in response.points]

    async def count(self, namespace: str, filters: Filters) -> int:
        with _outage_as_unavailable():
            result = await self.client.count(
                self.collection(namespace), count_filter=_filter(filters), exact=True
            )
        return result.count

    async def payload(self, namespace: str, point_id: uuid.UUID) -> dict[str, Any] | None:
        with _outage_as_unavailable():
            points = await self.client.retrieve(
                self.collection(namespace), [str(point_id)], with_payload=True
            )
        return dict(points[0].payload or {}) if points else None

    # -- index building -------------------------------------------------------------------------
    async def build_index(self, namespace: str) -> IndexBuild:
        """The server builds HNSW itself (its optimizer, for segments past the collection's
        indexing_threshold), so there is no build to start: an empty optimizers update makes it
        run what it holds back (a grey collection), then this waits until the collection is
        green. Nothing pending: answered at once, `built` false. Still optimizing after
        build_wait_s: UNAVAILABLE (a retry waits again)."""
        name = self.collection(namespace)
        with _outage_as_unavailable():
            before = await self.client.get_collection(name)
            pending = before.status != models.CollectionStatus.GREEN
            if pending:
                await self.client.update_collection(
                    name, optimizers_config=models.OptimizersConfigDiff()
                )
            info = await self._wait_until_green(name) if pending else before
        detail = (
            "the server's pending optimizations ran; the collection is green"
            if pending
            else "nothing pending: the server's optimizer indexes segments past the "
            "collection's indexing_threshold by itself"
        )
        return IndexBuild(
            engine=self.name,
            points=info.points_count or 0,
            indexed=info.indexed_vectors_count or 0,
            built=pending,
            joined=before.status == models.CollectionStatus.YELLOW,
            detail=detail,
        )

    async def _wait_until_green(self, name: str) -> models.CollectionInfo:
        deadline = time.monotonic() + self._build_wait_s
        while True:
            info = await self.client.get_collection(name)
            if info.status == models.CollectionStatus.GREEN:
                return info
            if info.status == models.CollectionStatus.RED:  # an optimizer error: no use waiting
                raise Unavailable(
                    f"Qdrant reports {name} red (an optimization failed); retry later",
                    retry_after=RETRY_AFTER_S,
                )
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"Qdrant is still optimizing {name} after {self._build_wait_s:.0f} s; retry",
                    retry_after=RETRY_AFTER_S,
                )
            await asyncio.sleep(BUILD_POLL_S)

    async def drop(self) -> None:
        for namespace in self.namespaces:
            await self.client.delete_collection(self.collection(namespace))
