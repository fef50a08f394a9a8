"""The PostgreSQL pool (a lifecycle Component) and the transaction the stores open.

The stores (usage, conversations, preferences, jobs) are the boundary of their own writes: each
public call opens one `transaction()`, runs its queries from repository.py on that connection,
queues outbox events in it, and commits or rolls back as a whole; a write that is one statement
(an answer's usage, events and turns: repository.record_exchange) needs only a `connection()`.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from aether_common.errors import Unavailable
from aether_common.logging import get_logger
from aether_common.migrations import migrate
from aether_common.postgres import create_pool

log = get_logger(__name__)

Conn = Any  # an asyncpg connection (asyncpg ships no type information)

# The database away, not a bad request: the caller may retry (UNAVAILABLE, not INTERNAL).
OUTAGES: tuple[type[BaseException], ...] = (
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    OSError,
)


class Database:
    """Component: applies the migrations (outbox table included), then opens the pool."""

    name = "postgres"

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn = dsn
        self._min_size, self._max_size = min_size, max_size
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database not started")
        return self._pool

    async def start(self) -> None:
        await migrate(self.dsn, importlib.resources.files("aether_ai") / "migrations")
        self._pool = await create_pool(self.dsn, min_size=self._min_size, max_size=self._max_size)

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ready(self) -> bool:
        if self._pool is None:
            return False
        try:
            return bool(await self._pool.fetchval("SELECT 1"))
        except (*OUTAGES, asyncpg.PostgresError):
            return False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A connection inside one transaction: committed on a clean exit, else rolled back."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                yield conn
        except OUTAGES as exc:
            log.warning("database outage", error=repr(exc))
            raise Unavailable("the AI service's database is unavailable; retry") from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection for reads, and for writes made in one statement (which commits
        or rolls back as a whole)."""
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except OUTAGES as exc:
            log.warning("database outage", error=repr(exc))
            raise Unavailable("the AI service's database is unavailable; retry") from exc
