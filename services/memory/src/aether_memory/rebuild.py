"""Rebuilds a lost index from PostgreSQL, the source of truth.

When a start had to create a namespace's collection (a new Qdrant server, a wiped volume,
":memory:" after a restart) while PostgreSQL still holds that namespace's records, no search
would find them and no upsert would re-embed them (their text did not change). This component
embeds them again in the background, page by page, in key order. The service serves meanwhile:
searches see the records already rebuilt.

Each page follows the write protocol: its records' advisory locks, a fresh read of their text
under the locks, Qdrant, commit. A concurrent upsert of the same record therefore lands either
before (and the page re-embeds its new text) or after (and overwrites the point itself).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aether_common.logging import get_logger
from aether_common.postgres import PostgresDatabase, UnitOfWork
from aether_memory import repository
from aether_memory.embeddings import Embeddings
from aether_memory.index import Point, VectorIndex
from aether_memory.metrics import RECORDS_REINDEXED

log = get_logger(__name__)

RETRY_S = 2.0
MAX_RETRY_S = 60.0


class IndexRebuild:
    """Component: the background rebuild of the collections this start created."""

    name = "index-rebuild"

    def __init__(
        self,
        database: PostgresDatabase,
        index: VectorIndex,
        embeddings: Embeddings,
        *,
        page_size: int,
    ) -> None:
        self._db = database
        self._index = index
        self._embeddings = embeddings
        self.page_size = page_size
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._index.created:
            self._task = asyncio.create_task(self._rebuild(list(self._index.created)))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ready(self) -> bool:
        return True  # the service serves while it rebuilds

    async def wait(self, within_s: float) -> None:
        """Until the rebuild finished (tests)."""
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), within_s)

    async def _rebuild(self, namespaces: list[str]) -> None:
        for namespace in namespaces:
            after, done, delay = ("", ""), 0, RETRY_S
            while True:
                try:
                    after, count = await self._page(namespace, after)
                except Exception as exc:  # Qdrant, the model or PostgreSQL away: later
                    log.warning("index rebuild paused", namespace=namespace, error=repr(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_RETRY_S)
                    continue
                delay = RETRY_S
                if count == 0:
                    break
                done += count
            if done:
                log.info("index rebuilt from postgres", namespace=namespace, records=done)

    async def _page(self, namespace: str, after: tuple[str, str]) -> tuple[tuple[str, str], int]:
        """Re-embed the next page; returns the new cursor and how many records it held."""

        async def reindex(uow: UnitOfWork) -> tuple[list[Any], int]:
            conn = uow.conn
            keys = await repository.page(conn, namespace, after, self.page_size)
            if not keys:
                return keys, 0
            point_ids = [point for _, _, point in keys]
            await repository.lock_points(conn, point_ids)
            rows = await repository.by_points(conn, namespace, point_ids)
            current = [rows[p] for p in point_ids if p in rows]  # deleted meanwhile: skipped
            if current:
                vectors = await self._embeddings.embed([row["text"] for row in current])
                points = [
                    Point(row["point_id"], row["user_id"], row["room_id"], row["created_at"])
                    for row in current
                ]
                await self._index.upsert(namespace, points, vectors)
            return keys, len(current)

        keys, reindexed = await self._db.transaction(reindex)
        if not keys:
            return after, 0
        RECORDS_REINDEXED.labels(namespace).inc(reindexed)
        last_scope, last_id, _ = keys[-1]
        return (last_scope, last_id), len(keys)
