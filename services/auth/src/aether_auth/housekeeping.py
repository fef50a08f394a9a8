"""Component: periodic upkeep. Reloads signing keys (another replica may have rotated), rotates
them when due, and purges rows that can no longer be used (expired refresh tokens and mail
links, old sessions, login history past its retention)."""

from __future__ import annotations

from datetime import timedelta

from aether_auth import repository
from aether_auth.keys import KeyRing
from aether_common.logging import get_logger
from aether_common.periodic import Periodic
from aether_common.postgres import PostgresDatabase

log = get_logger(__name__)


class Housekeeper(Periodic):
    name = "housekeeper"

    def __init__(
        self,
        database: PostgresDatabase,
        keys: KeyRing,
        *,
        interval_s: float,
        rotation_interval: timedelta | None,
        login_history_retention: timedelta,
    ) -> None:
        super().__init__(interval_s=interval_s)
        self._db = database
        self._keys = keys
        self._rotation = rotation_interval
        self._retention = login_history_retention

    async def run_once(self) -> None:
        if self._rotation is not None:
            await self._keys.rotate_if_older_than(self._rotation)
        else:
            await self._keys.reload()
        purged = await self._db.transaction(
            lambda uow: repository.purge_expired(uow.conn, login_history_older_than=self._retention)
        )
        if any(purged.values()):
            log.info("expired rows purged", **purged)
