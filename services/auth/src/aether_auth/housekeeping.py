"""Component: periodic upkeep. Reloads signing keys (another replica may have rotated), rotates
them when due, and purges rows that can no longer be used (expired refresh tokens and mail
links, old sessions, login history past its retention)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from aether_auth import repository
from aether_auth.db import Database
from aether_auth.keys import KeyRing
from aether_common.logging import get_logger

log = get_logger(__name__)


class Housekeeper:
    name = "housekeeper"

    def __init__(
        self,
        database: Database,
        keys: KeyRing,
        *,
        interval_s: float,
        rotation_interval: timedelta | None,
        login_history_retention: timedelta,
    ) -> None:
        self._db = database
        self._keys = keys
        self.interval_s = interval_s
        self._rotation = rotation_interval
        self._retention = login_history_retention
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run_once(self) -> None:
        if self._rotation is not None:
            await self._keys.rotate_if_older_than(self._rotation)
        else:
            await self._keys.reload()
        async with self._db.transaction() as uow:
            purged = await repository.purge_expired(
                uow.conn, login_history_older_than=self._retention
            )
        if any(purged.values()):
            log.info("expired rows purged", **purged)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.run_once()
            except Exception:  # upkeep must outlive a database hiccup
                log.exception("housekeeping failed; will retry")
