"""Job changes as they happen, for WatchJob: one connection per process LISTENs on
`worker_jobs` (a trigger NOTIFYs the job id on every update) and wakes the watchers of that job.
A lost connection is re-opened in the background; meanwhile watchers still re-read every
`watch_poll_s`, so a missed notification delays an update, never loses it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import asyncpg

from aether_common.logging import get_logger
from aether_worker.repository import CHANNEL

log = get_logger(__name__)

RECONNECT_S = 2.0


class JobWatcher:
    name = "job-watch"

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: Any = None
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._keep_connected(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    async def ready(self) -> bool:
        return True  # without the listener, watchers poll: degraded, not down

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever job `job_id` changes (clear it after each wake-up)."""
        changed = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(changed)
        try:
            yield changed
        finally:
            watchers = self._watchers.get(job_id)
            if watchers is not None:
                watchers.discard(changed)
                if not watchers:
                    del self._watchers[job_id]

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for changed in self._watchers.get(payload, ()):
            changed.set()

    async def _connect(self) -> None:
        try:
            conn = await asyncpg.connect(self._dsn)
            await conn.add_listener(CHANNEL, self._on_notify)
        except Exception as exc:  # watchers poll meanwhile
            log.warning("cannot LISTEN for job changes; polling", error=repr(exc))
            return
        self._conn = conn
        # Whatever changed while no one listened: wake every watcher to re-read.
        for watchers in self._watchers.values():
            for changed in watchers:
                changed.set()

    async def _keep_connected(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_S)
            if self._conn is None or self._conn.is_closed():
                await self._close()
                await self._connect()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()
