"""The PostgreSQL pool (a lifecycle Component); the boundary opens the transactions.

Transport adapters (grpc.py) run `async with database.transaction() as conn:` and hand `conn`
to the service; the consumer gets its connection from the idempotency store's claim. The
service writes through it and never commits.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from aether_common.migrations import migrate
from aether_common.postgres import create_pool


class Database:
    """Component: applies the migrations, then connects the pool."""

    name = "postgres"

    def __init__(self, dsn: str, *, pool_size: int = 10) -> None:
        self.dsn = dsn
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database not started")
        return self._pool

    async def start(self) -> None:
        await migrate(self.dsn, importlib.resources.files("aether_memory") / "migrations")
        self._pool = await create_pool(self.dsn, max_size=self._pool_size, init=_codecs)

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ready(self) -> bool:
        if self._pool is None:
            return False
        return bool(await self._pool.fetchval("SELECT 1"))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A connection in a transaction: committed when the block ends cleanly."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn


async def _codecs(conn: Any) -> None:
    # jsonb as Python objects (orjson is what the rest of the platform uses).
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
        format="text",
    )
