"""The PostgreSQL pool (a lifecycle Component) and the unit of work the boundary opens.

Transport adapters (grpc.py, admin.py) open `async with database.transaction() as uow:` and
hand `uow` to the service; the service writes through `uow.conn`, queues events with
`uow.emit()` and side effects with `uow.after_commit()`, and never commits itself.

Some refusals must keep their writes: a failed login records a `login_failed` event, a re-used
refresh token revokes its family. The service raises `KeepWrites(error)` for those: the unit of
work commits, then the caller sees `error`.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aether_common.errors import AetherError, Unavailable
from aether_common.events import Event, outbox_pg
from aether_common.logging import get_logger
from aether_common.migrations import migrate
from aether_common.postgres import create_pool

log = get_logger(__name__)

AfterCommit = Callable[[], Awaitable[None]]

# A datastore away, not a bad request: the caller may retry (UNAVAILABLE, not INTERNAL).
OUTAGES: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    OSError,
)


class KeepWrites(Exception):
    """Commit what the unit of work wrote, then raise `error` to the caller."""

    def __init__(self, error: AetherError) -> None:
        super().__init__(error.detail)
        self.error = error


class UnitOfWork:
    """One transaction: its connection, its outbox events, what to do once it committed."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._after_commit: list[AfterCommit] = []

    async def emit(self, *events: Event[Any]) -> None:
        """Queue events in the outbox: published only if this transaction commits."""
        await outbox_pg.add_many(self.conn, events)

    def after_commit(self, action: AfterCommit) -> None:
        """Run `action` once committed (mail). Its failure is logged; the call still succeeds."""
        self._after_commit.append(action)

    async def _run_after_commit(self) -> None:
        for action in self._after_commit:
            try:
                await action()
            except Exception:
                log.exception("after-commit action failed", action=getattr(action, "__name__", ""))


class Database:
    """Component: connects the pool and applies the migrations at start."""

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
        await migrate(self.dsn, importlib.resources.files("aether_auth") / "migrations")
        self._pool = await create_pool(self.dsn, min_size=self._min_size, max_size=self._max_size)

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ready(self) -> bool:
        if self._pool is None:
            return False
        return bool(await self._pool.fetchval("SELECT 1"))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        try:
            async with self._transaction() as uow:
                yield uow
        except OUTAGES as exc:
            log.warning("datastore outage", error=repr(exc))
            raise Unavailable("a datastore of the auth service is unavailable; retry") from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[UnitOfWork]:
        refusal: AetherError | None = None
        async with self.pool.acquire() as conn:
            uow = UnitOfWork(conn)
            tx = conn.transaction()
            await tx.start()
            try:
                yield uow
            except KeepWrites as keep:
                refusal = keep.error
            except BaseException:
                await tx.rollback()
                raise
            await tx.commit()
        # After the connection went back to the pool: mail must not hold it.
        await uow._run_after_commit()
        if refusal is not None:
            raise refusal
