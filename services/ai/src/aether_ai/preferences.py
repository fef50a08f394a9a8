"""Each user's preferences: for now the default mode (the caller validates the mode name)."""

from __future__ import annotations

from aether_ai import repository
from aether_ai.db import Database


class Preferences:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_mode(self, user_id: str) -> str | None:
        """The user's default mode; None when never set (the caller applies its default)."""
        async with self._db.connection() as conn:
            return await repository.get_mode(conn, user_id)

    async def set_mode(self, user_id: str, mode: str) -> None:
        async with self._db.transaction() as conn:
            await repository.set_mode(conn, user_id, mode)
