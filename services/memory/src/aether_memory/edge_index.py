"""The embedded index: Qdrant Edge (`qdrant-edge-py`), the Qdrant server's Rust engine (segments,
HNSW, payload indexes, WAL) inside this process, one shard per namespace:

    <location>/<collection>/.lock       held by the serving process: one process per shard
    <location>/<collection>/CURRENT     the live generation ("gen-3")
    <location>/<collection>/gen-3/      the shard

Crash safety: an update is in the shard's WAL when `update` returns, so a killed process loses
nothing it acknowledged; the next load replays the WAL. A shard that does not load is moved
aside (`broken-3-<time>`) and created anew, and the rebuild re-embeds it from PostgreSQL.

Index building: points are searched exactly until the optimizer builds HNSW over them, and
Edge's optimize() holds its caller (and the GIL) for minutes at 100k points, so it never runs
here. Once a shard holds `index_after` more points outside HNSW than after its last build, it is
copied (writes wait for the copy; searches do not), a child process at a lower CPU priority
optimizes the copy (edge_build.py), the writes made meanwhile are applied to it in order, and it
becomes the live generation. CURRENT names a complete shard at every step, so a crash at any of
them loses nothing.

Calls run on the event loop: a filtered search takes tens of microseconds, an unfiltered one a
millisecond or two over HNSW plus an exact pass over the points not yet indexed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import qdrant_edge as edge

from aether_common.errors import Unavailable
from aether_common.logging import get_logger
from aether_common.outages import RETRY_AFTER_S
from aether_common.periodic import Periodic
from aether_memory.embeddings import Vectors
from aether_memory.index import KEYWORD_FIELDS, TIME_FIELD, Filters, Hit, IndexBuild, Point
from aether_memory.metrics import INDEX_BUILD_DURATION, INDEX_BUILDS

log = get_logger(__name__)

CURRENT = "CURRENT"
# The build child runs at this niceness: searches keep the cores first.
BUILD_NICENESS = 10


def _filter(filters: Filters) -> edge.Filter | None:
    must: list[Any] = [
        edge.FieldCondition(key=key, match=edge.MatchValue(value=value))
        for key, value in filters.keywords()
    ]
    if (bounds := filters.time_range()) is not None:
        must.append(
            edge.FieldCondition(key=TIME_FIELD, range=edge.RangeFloat(gte=bounds[0], lt=bounds[1]))
        )
    return edge.Filter(must=must) if must else None


def _generation(name: str) -> int:
    return int(name.removeprefix("gen-"))


def _write_current(root: Path, generation: int) -> None:
    """Point CURRENT at a generation atomically (a crash leaves the old name or the new)."""
    staged = root / (CURRENT + ".tmp")
    with open(staged, "w") as handle:
        handle.write(f"gen-{generation}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staged, root / CURRENT)
    directory = os.open(root, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _lock(root: Path) -> IO[bytes]:
    handle = open(root / ".lock", "wb")  # noqa: SIM115  (held until stop)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(
            f"{root} is served by another process: Qdrant Edge serves one process per directory; "
            "run replicas against a Qdrant server (MEMORY_QDRANT_LOCATION=http://...)"
        ) from None
    return handle


@dataclass
class _Shard:
    """A namespace's live shard, and the writes a build in progress must replay."""

    root: Path
    generation: int
    engine: edge.EdgeShard
    lock_file: IO[bytes]
    writes: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list[edge.UpdateOperation] | None = None
    build: asyncio.Task[bool] | None = None
    # Points outside HNSW right after this process's last build (segments too small to index
    # stay so). 0 at start: a shard loaded with index_after points outside HNSW is built.
    unindexed_after_build: int = 0

    @property
    def path(self) -> Path:
        return self.root / f"gen-{self.generation}"

    def unindexed(self) -> int:
        info = self.engine.info()
        return int(info.points_count) - int(info.indexed_vectors_count)

    async def apply(self, operation: edge.UpdateOperation) -> None:
        async with self.writes:  # held only while a build copies the shard
            self.engine.update(operation)
            if self.pending is not None:
                self.pending.append(operation)


class EdgeIndex:
    """Component: the namespaces' Edge shards under one directory (":memory:": a temporary one)."""

    name = "qdrant-edge"

    def __init__(
        self,
        location: str,
        *,
        prefix: str,
        namespaces: Iterable[str],
        dimensions: int,
        index_after: int = 20_000,
        check_interval_s: float = 10.0,
    ) -> None:
        self.location = location
        self.prefix = prefix
        self.namespaces = tuple(namespaces)
        self.dimensions = dimensions
        self.index_after = index_after
        self.created: list[str] = []
        self._shards: dict[str, _Shard] = {}
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self._builds = _DueBuilds(self, interval_s=check_interval_s)

    def collection(self, namespace: str) -> str:
        return self.prefix + namespace

    def generation(self, namespace: str) -> int:
        return self._shard(namespace).generation

    def unindexed(self, namespace: str) -> int:
        """Points of the namespace outside HNSW (searched exactly until a build)."""
        return self._shard(namespace).unindexed()

    def _config(self) -> edge.EdgeConfig:
        return edge.EdgeConfig(
            vectors={"": edge.EdgeVectorParams(size=self.dimensions, distance=edge.Distance.Cosine)}
        )

    def _shard(self, namespace: str) -> _Shard:
        try:
            return self._shards[namespace]
        except KeyError:
            raise RuntimeError("qdrant edge index not started") from None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.location == ":memory:":
            self._temporary = tempfile.TemporaryDirectory(prefix="aether-edge-")
            base = Path(self._temporary.name)
        else:
            base = Path(self.location)
        self.created = []
        try:
            for namespace in self.namespaces:
                shard, created = self._open(base / self.collection(namespace))
                self._shards[namespace] = shard
                if created:
                    self.created.append(namespace)
        except BaseException:
            await self.stop()
            raise
        await self._builds.start()

    def _open(self, root: Path) -> tuple[_Shard, bool]:
        """Load the live generation, or create one (True: created, its records to rebuild)."""
        root.mkdir(parents=True, exist_ok=True)
        lock_file = _lock(root)
        try:
            current = root / CURRENT
            if current.exists():
                generation = _generation(current.read_text().strip())
                try:
                    engine = edge.EdgeShard.load(str(root / f"gen-{generation}"), self._config())
                except Exception as exc:
                    if "ncompatible" in str(exc):
                        raise RuntimeError(
                            f"{root} holds vectors of another size than the embedder's "
                            f"{self.dimensions}: a changed model needs a new "
                            "MEMORY_COLLECTION_PREFIX"
                        ) from exc
                    aside = root / f"broken-{generation}-{int(time.time())}"
                    os.replace(root / f"gen-{generation}", aside)
                    log.error(
                        "qdrant edge shard did not load: moved aside, rebuilding from postgres",
                        shard=str(aside),
                        error=str(exc),
                    )
                else:
                    self._remove_unfinished_builds(root, generation)
                    return _Shard(root, generation, engine, lock_file), False
                generation += 1
            else:
                generation = 1
            engine = self._create(root / f"gen-{generation}")
            _write_current(root, generation)
            log.info("qdrant edge shard created", shard=str(root), size=self.dimensions)
            return _Shard(root, generation, engine, lock_file), True
        except BaseException:
            lock_file.close()
            raise

    def _create(self, path: Path) -> edge.EdgeShard:
        shutil.rmtree(path, ignore_errors=True)  # a half-created one from a crash
        engine = edge.EdgeShard.create(str(path), self._config())
        for name in KEYWORD_FIELDS:
            engine.update(
                edge.UpdateOperation.create_field_index(name, edge.PayloadSchemaType.Keyword)
            )
        engine.update(
            edge.UpdateOperation.create_field_index(TIME_FIELD, edge.PayloadSchemaType.Float)
        )
        return engine

    @staticmethod
    def _remove_unfinished_builds(root: Path, live: int) -> None:
        for path in root.glob("gen-*"):
            if path.name != f"gen-{live}":
                shutil.rmtree(path, ignore_errors=True)

    async def stop(self) -> None:
        await self._builds.stop()
        shards, self._shards = self._shards, {}
        for shard in shards.values():
            await self._close(shard)
        temporary, self._temporary = self._temporary, None
        if temporary is not None:
            temporary.cleanup()

    @staticmethod
    async def _close(shard: _Shard) -> None:
        if shard.build is not None:
            shard.build.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shard.build
        shard.engine.flush()
        shard.engine.close()
        shard.lock_file.close()

    async def ready(self) -> bool:
        return bool(self._shards)

    async def drop(self) -> None:
        shards, self._shards = self._shards, {}
        for shard in shards.values():
            await self._close(shard)
            shutil.rmtree(shard.root, ignore_errors=True)

    # -- writes ---------------------------------------------------------------------------------
    async def upsert(self, namespace: str, points: Sequence[Point], vectors: Vectors) -> None:
        if not points:
            return
        batch = [
            edge.Point(str(point.id), vector.tolist(), point.payload())
            for point, vector in zip(points, vectors, strict=True)
        ]
        await self._shard(namespace).apply(edge.UpdateOperation.upsert_points(batch))

    async def delete(self, namespace: str, point_ids: Sequence[uuid.UUID]) -> None:
        if point_ids:
            operation = edge.UpdateOperation.delete_points([str(p) for p in point_ids])
            await self._shard(namespace).apply(operation)

    async def delete_user(self, namespace: str, user_id: str) -> None:
        only_theirs = _filter(Filters(user_id=user_id))
        assert only_theirs is not None
        await self._shard(namespace).apply(
            edge.UpdateOperation.delete_points_by_filter(only_theirs)
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
        request = edge.QueryRequest(
            limit=limit,
            query=edge.Query.Nearest(list(vector)),
            filter=_filter(filters),
            score_threshold=min_score,
            with_payload=False,
        )
        found = self._shard(namespace).engine.query(request)
        return [Hit(uuid.UUID(str(point.id)), point.score) for point in found]

    async def count(self, namespace: str, filters: Filters) -> int:
        request = edge.CountRequest(exact=True, filter=_filter(filters))
        return int(self._shard(namespace).engine.count(request))

    async def payload(self, namespace: str, point_id: uuid.UUID) -> dict[str, Any] | None:
        records = self._shard(namespace).engine.retrieve([str(point_id)], True, False)
        return dict(records[0].payload or {}) if records else None

    # -- index building -------------------------------------------------------------------------
    def start_due_builds(self) -> None:
        """Start a build of each shard with index_after more points outside HNSW than after
        its last build."""
        for namespace, shard in self._shards.items():
            grown = shard.unindexed() - shard.unindexed_after_build
            if shard.build is None and grown >= self.index_after:
                shard.build = asyncio.create_task(self._build(namespace, shard))

    async def optimize(self, namespace: str) -> bool:
        """Build the namespace's indexes now, off the event loop (tests, operators); True once the
        built shard is live. Joins a build already running."""
        shard = self._shard(namespace)
        if shard.build is None:
            shard.build = asyncio.create_task(self._build(namespace, shard))
        return await asyncio.shield(shard.build)

    async def build_index(self, namespace: str) -> IndexBuild:
        """A build now, the periodic builds' own path (`optimize`): joined when one runs."""
        shard = self._shard(namespace)
        joined = shard.build is not None
        if not await self.optimize(namespace):
            raise Unavailable(
                f"the index build of {namespace} failed (the live shard is unchanged); retry",
                retry_after=RETRY_AFTER_S,
            )
        info = shard.engine.info()
        return IndexBuild(
            engine=self.name,
            points=int(info.points_count),
            indexed=int(info.indexed_vectors_count),
            built=True,
            joined=joined,
            detail=f"generation {shard.generation} built and live",
        )

    async def _build(self, namespace: str, shard: _Shard) -> bool:
        started = time.perf_counter()
        target = shard.root / f"gen-{shard.generation + 1}"
        built: edge.EdgeShard | None = None
        try:
            await asyncio.to_thread(shutil.rmtree, target, True)  # a failed build's leftovers
            async with shard.writes:
                shard.engine.flush()
                await asyncio.to_thread(shutil.copytree, shard.path, target)
                shard.pending = []
            await _optimize_in_child(target)
            built = await asyncio.to_thread(edge.EdgeShard.load, str(target))
            async with shard.writes:
                for operation in shard.pending:
                    built.update(operation)
                built.flush()
                _write_current(shard.root, shard.generation + 1)
                old, shard.engine, built = shard.engine, built, None
                shard.generation += 1
            old.close()
            await asyncio.to_thread(shutil.rmtree, shard.root / f"gen-{shard.generation - 1}")
        except Exception as exc:
            INDEX_BUILDS.labels(namespace, "failed").inc()
            log.warning("qdrant edge index build failed", namespace=namespace, error=repr(exc))
            return False
        finally:
            shard.pending = None
            shard.build = None
            # Built or not, the next build waits for index_after more points (a failing one
            # is not retried in a loop).
            shard.unindexed_after_build = shard.unindexed()
            if built is not None:
                built.close()
            if shard.generation < _generation(target.name):  # not swapped in: discard the copy
                await asyncio.to_thread(shutil.rmtree, target, True)
        seconds = time.perf_counter() - started
        INDEX_BUILDS.labels(namespace, "built").inc()
        INDEX_BUILD_DURATION.labels(namespace).observe(seconds)
        log.info(
            "qdrant edge index built",
            namespace=namespace,
            generation=shard.generation,
            seconds=round(seconds, 1),
        )
        return True


class _DueBuilds(Periodic):
    name = "qdrant-edge-builds"

    def __init__(self, index: EdgeIndex, *, interval_s: float) -> None:
        super().__init__(interval_s=interval_s)
        self._index = index

    async def run_once(self) -> None:
        self._index.start_due_builds()


async def _optimize_in_child(path: Path) -> None:
    """Edge's optimize() on the shard at `path`, in a child process (it holds its GIL)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aether_memory.edge_build", str(path), str(BUILD_NICENESS)
    )
    try:
        code = await child.wait()
    finally:
        if child.returncode is None:  # cancelled: the build dies with its shard
            child.kill()
            await child.wait()
    if code != 0:
        raise RuntimeError(f"the index build process exited with {code}")
