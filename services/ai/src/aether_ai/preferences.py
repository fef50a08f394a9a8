"""Each user's preferences: for now the default mode (the caller validates the mode name)."""

from __future__ import annotations

from aether_ai import repository
from aether_common.postgres import PostgresDatabase


class Preferences:
    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def get_mode(self, user_id: str) -> str | None:
        """The user's default mode; None when never set (the caller applies its default)."""
        async with self._db.connection() as conn:
            return await repository.get_mode(conn, user_id)

    async def set_mode(self, user_id: str, mode: str) -> None:
        await self._db.transaction(lambda uow: repository.set_mode(uow.conn, user_id, mode))
