"""PostgreSQL for the services (asyncpg), made one way: a lifecycle Component and the unit of work
the boundary opens, with the contract of the MongoDB one (unit_of_work.py).

The boundary (an RPC, a route, a consumed message, a job) runs
`await database.transaction(body)`; `body(uow)` is the service call. It writes through
`uow.conn`, queues events with `uow.emit()` (the outbox, same transaction) and side effects with
`uow.after_commit()`, and never commits: the component does.

- `KeepWrites(error)`: commit, run the after-commit actions, then raise `error`.
- A transient error (a serialization failure, a deadlock victim) re-runs the whole body in a
  fresh transaction, `attempts` times at most; once they are spent, or on an outage, the call
  leaves as `Unavailable` with Retry-After, never INTERNAL.
- `database.connection()` is a pooled connection outside any transaction: reads, and writes
  that are one statement (which commits or rolls back as a whole) where a transaction's extra
  round trips measurably cost (ai's cache-hit answer: docs/operations.md). Its outages leave as
  `Unavailable` too.
- A writer that dies mid-transaction holds nothing: its connection closes and PostgreSQL rolls
  back at once. One that is paused (SIGSTOP, a frozen VM, a stalled event loop) would hold its
  row locks for as long as it stays paused: every session ends a transaction left idle for
  `idle_in_transaction_timeout_s` (PostgreSQL's `idle_in_transaction_session_timeout`), so
  other writers wait that long at most, and the paused one finds its work rolled back.

A connection goes back to the pool without asyncpg's reset query (`RESET ALL`, `UNLISTEN *`,
`pg_advisory_unlock_all()`, `CLOSE ALL`): one more round trip per transaction, for state our
pooled connections never hold. Locks are transaction-scoped (`pg_advisory_xact_lock`); LISTEN,
session advisory locks and session settings live on dedicated connections (the outbox relay,
migrations, the AI jobs' listener). asyncpg still rolls back a transaction left open and drops
listeners on release.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.resources.abc import Traversable
from typing import Any, TypeVar

import asyncpg
import orjson

from aether_common import outages
from aether_common.events import outbox_pg
from aether_common.events.envelope import Event
from aether_common.logging import get_logger
from aether_common.migrations import migrate
from aether_common.unit_of_work import (
    DEFAULT_ATTEMPTS,
    AfterCommitActions,
    KeepWrites,
    retry_transient,
)

log = get_logger(__name__)

T = TypeVar("T")
Conn = Any  # an asyncpg connection (asyncpg ships no type information)
Init = Callable[[Conn], Awaitable[None]]
# How long a transaction may sit idle (its writer paused) before PostgreSQL ends it. Longer than
# any legitimate pause inside our transactions (memory embeds a batch inside its write).
IDLE_IN_TRANSACTION_TIMEOUT_S = 30.0


class UnitOfWork(AfterCommitActions):
    """One transaction: its connection, its outbox events, what to do once it committed."""

    def __init__(self, conn: Conn) -> None:
        super().__init__()
        self.conn = conn

    async def emit(self, *events: Event[Any]) -> None:
        """Queue events in the outbox: published only if this transaction commits."""
        await outbox_pg.add_many(self.conn, events)


class PostgresDatabase:
    """Component: applies the service's migrations (its outbox table included), then opens the
    pool. `on_retry` is told of each transient re-run (a metric)."""

    name = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        service: str,
        migrations: Traversable | None = None,
        min_size: int = 1,
        max_size: int = 10,
        init: Init | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        on_retry: Callable[[], None] | None = None,
        idle_in_transaction_timeout_s: float = IDLE_IN_TRANSACTION_TIMEOUT_S,
    ) -> None:
        self.dsn = dsn
        self.idle_in_transaction_timeout_s = idle_in_transaction_timeout_s
        self.service = service
        self.attempts = attempts
        self._migrations = migrations
        self._min_size, self._max_size = min_size, max_size
        self._init = init
        self._on_retry = on_retry
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database not started")
        return self._pool

    async def start(self) -> None:
        if self._migrations is not None:
            await migrate(self.dsn, self._migrations)
        self._pool = await create_pool(
            self.dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            init=self._init,
            server_settings={
                "idle_in_transaction_session_timeout": str(
                    int(self.idle_in_transaction_timeout_s * 1000)
                )
            },
        )

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ready(self) -> bool:
        if self._pool is None:
            return False
        try:
            return bool(await self._pool.fetchval("SELECT 1"))
        except Exception:  # a probe answers, it does not raise
            return False

    async def transaction(
        self, body: Callable[[UnitOfWork], Awaitable[T]], *, attempts: int | None = None
    ) -> T:
        """Run `body` in a transaction, commit, then run its after-commit actions; re-run it on
        a transient error, `attempts` times at most (default: the component's)."""
        uow, outcome = await retry_transient(
            lambda: self._attempt(body),
            attempts=attempts or self.attempts,
            service=self.service,
            on_retry=self._on_retry,
        )
        # After the connection went back to the pool: side effects must not hold it.
        await uow.run_after_commit()
        if isinstance(outcome, KeepWrites):
            raise outcome.error
        return outcome

    async def _attempt(
        self, body: Callable[[UnitOfWork], Awaitable[T]]
    ) -> tuple[UnitOfWork, T | KeepWrites]:
        async with self.pool.acquire() as conn:
            uow = UnitOfWork(conn)
            tx = conn.transaction()
            await tx.start()
            outcome: T | KeepWrites
            try:
                outcome = await body(uow)
            except KeepWrites as keep:
                outcome = keep
            except BaseException:
                await tx.rollback()
                raise
            await tx.commit()
        return uow, outcome

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection outside any transaction (reads, one-statement writes)."""
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except Exception as exc:
            unavailable = outages.as_unavailable(exc, self.service)
            if unavailable is None:
                raise
            log.warning("datastore unavailable", error=repr(exc))
            raise unavailable from exc


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    init: Init | None = None,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init,
        reset=_nothing_to_reset,
        server_settings=server_settings,
    )
    return pool


async def jsonb_as_objects(conn: Conn) -> None:
    """Pool `init`: jsonb in and out as Python objects (orjson, as the rest of the platform)."""
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
        format="text",
    )


async def _nothing_to_reset(connection: Any) -> None:
    return None
