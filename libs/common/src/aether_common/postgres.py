"""PostgreSQL connection pools for the services (asyncpg), made one way.

A connection goes back to the pool without asyncpg's reset query (`RESET ALL`, `UNLISTEN *`,
`pg_advisory_unlock_all()`, `CLOSE ALL`): one more round trip per transaction, for state our
pooled connections never hold. Services use pooled connections for transactions only: their
locks are transaction-scoped (`pg_advisory_xact_lock`), and LISTEN, session advisory locks and
session settings live on dedicated connections (the outbox relay, migrations, the AI jobs'
listener). asyncpg still rolls back a transaction left open and drops listeners on release.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    init: Callable[[Any], Awaitable[None]] | None = None,
) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init, reset=_nothing_to_reset
    )
    return pool


async def _nothing_to_reset(connection: Any) -> None:
    return None
