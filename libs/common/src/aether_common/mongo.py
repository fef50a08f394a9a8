"""MongoDB for the services (pymongo's asyncio client), made one way: a lifecycle Component and
the unit of work the boundary opens, with the contract of the PostgreSQL one (unit_of_work.py).

The boundary (an RPC, a consumed message, a job) runs
`await database.transaction(body, key=...)`; `body(uow)` is the service call. It reads and writes
through `uow.db` with `session=uow.session`, queues events with `uow.emit()` (the outbox, same
transaction) and side effects with `uow.after_commit()`, and never commits: the component does.

- `KeepWrites(error)`: commit, run the after-commit actions, then raise `error`.
- A transient error (a write conflict: MongoDB labels it `TransientTransactionError`) re-runs
  the whole body in a fresh transaction, `attempts` times at most; once they are spent, or on an
  outage, the call leaves as `Unavailable` with Retry-After, never INTERNAL.
- A commit whose outcome is unknown (`UnknownTransactionCommitResult`: the connection dropped
  during it) is asked again: committing twice is idempotent.
- Transactions with the same `key` (a chat room) run one after the other in this process, their
  after-commit actions included: one replica never races itself for the key's documents, and
  the key's side effects happen in commit order. Only replicas race, and they retry.
- Reads outside a transaction go through `database.reader` (the database, no session).
- A writer that dies or stops inside a transaction leaves it open on the server, holding its
  documents, until the server's `transactionLifetimeLimitSeconds` ends it (MongoDB's default is
  60 s; ours is 3 s, docs/operations.md). Meanwhile the others' attempts conflict and leave as
  `Unavailable`. `start()` warns when the server reports a longer lifetime than
  `max_transaction_lifetime_s`.

A service whose unit of work carries more (chat's real-time changes) subclasses `UnitOfWork` and
passes the factory as `unit_of_work=`; its bodies get that type.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from aether_common.events import outbox_mongo
from aether_common.events.envelope import Event
from aether_common.logging import get_logger
from aether_common.unit_of_work import (
    DEFAULT_ATTEMPTS,
    AfterCommitActions,
    KeepWrites,
    retry_transient,
)

log = get_logger(__name__)

Doc = dict[str, Any]
T = TypeVar("T")
U = TypeVar("U", bound="UnitOfWork")
# Run at start, outside any transaction (MongoDB creates collections there, not inside one).
IndexHook = Callable[[AsyncDatabase[Doc]], Awaitable[None]]

UNKNOWN_COMMIT = "UnknownTransactionCommitResult"
COMMIT_ATTEMPTS = 3
# A stopped writer holds its documents this long at most (the server's transaction lifetime).
MAX_TRANSACTION_LIFETIME_S = 5.0


class UnitOfWork(AfterCommitActions):
    """One transaction: its session, its outbox events, what to do once it committed."""

    def __init__(self, db: AsyncDatabase[Doc], session: AsyncClientSession) -> None:
        super().__init__()
        self.db = db
        self.session: AsyncClientSession = session
        self.emitted = False

    async def emit(self, *events: Event[Any]) -> None:
        """Queue events in the outbox: published only if this transaction commits."""
        await outbox_mongo.add_many(self.db, self.session, events)
        self.emitted = True

    async def restart(self) -> None:
        """Drop everything written so far, after-commit actions included, and go on in a fresh
        transaction (after a write error that aborted the transaction on the server, e.g. a
        duplicate key)."""
        if self.session.in_transaction:
            await self.session.abort_transaction()
        self._actions.clear()
        self.emitted = False
        await self.session.start_transaction()


@dataclass(frozen=True, slots=True)
class Reader:
    """Reads outside any transaction: the database and no session."""

    db: AsyncDatabase[Doc]
    session: None = None


class _KeyedLocks:
    """asyncio locks by key, dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class MongoDatabase(Generic[U]):
    """Component: the MongoDB client of `service`; runs its index hooks at start.

    `unit_of_work` makes the unit of work of each transaction from the database and the session
    (`UnitOfWork`, or a service's subclass). `on_retry` is told of each re-run (a metric).
    `on_events`, when set, is called after each `transaction()` that committed outbox events
    (the process's own relay's `wake`; a transaction its owner opened, `unit_of_work()`, waits
    for the relay's poll).
    """

    name = "mongo"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        service: str,
        unit_of_work: Callable[[AsyncDatabase[Doc], AsyncClientSession], U],
        indexes: Sequence[IndexHook] = (),
        pool_size: int = 100,
        timeout_s: float = 5.0,
        attempts: int = DEFAULT_ATTEMPTS,
        on_retry: Callable[[], None] | None = None,
        max_transaction_lifetime_s: float = MAX_TRANSACTION_LIFETIME_S,
    ) -> None:
        self.service = service
        self.max_transaction_lifetime_s = max_transaction_lifetime_s
        # Connects lazily; a short server selection timeout so an outage fails calls fast.
        self.client: AsyncMongoClient[Doc] = AsyncMongoClient(
            url,
            tz_aware=True,
            maxPoolSize=pool_size,
            serverSelectionTimeoutMS=int(timeout_s * 1000),
            connectTimeoutMS=int(timeout_s * 1000),
            appname=f"aether-{service}",
        )
        self.db: AsyncDatabase[Doc] = self.client[database]
        self.reader = Reader(self.db)
        self.attempts = attempts
        self._unit_of_work = unit_of_work
        self._indexes = tuple(indexes)
        self._on_retry = on_retry
        self._locks = _KeyedLocks()
        self.on_events: Callable[[], None] | None = None

    async def start(self) -> None:
        await self.client.admin.command("ping")
        for ensure in self._indexes:
            await ensure(self.db)
        await self._check_transaction_lifetime()

    async def _check_transaction_lifetime(self) -> None:
        try:
            reply = await self.client.admin.command(
                {"getParameter": 1, "transactionLifetimeLimitSeconds": 1}
            )
        except PyMongoError:  # not ours to read (no privilege) or not reported: nothing to say
            return
        lifetime = reply.get("transactionLifetimeLimitSeconds")
        if isinstance(lifetime, int | float) and lifetime > self.max_transaction_lifetime_s:
            log.warning(
                "a writer stopped mid-transaction will hold its documents this long: set the "
                "server's transactionLifetimeLimitSeconds lower (docs/operations.md)",
                transaction_lifetime_s=lifetime,
                bound_s=self.max_transaction_lifetime_s,
            )

    async def stop(self) -> None:
        await self.client.close()

    async def ready(self) -> bool:
        try:
            await self.client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    def unit_of_work(self, session: AsyncClientSession) -> U:
        """A unit of work in a transaction that its owner opened and commits (a consumer's
        idempotency claim, `HandleContext.tx`): the owner also runs `run_after_commit()`."""
        return self._unit_of_work(self.db, session)

    async def transaction(
        self,
        body: Callable[[U], Awaitable[T]],
        *,
        key: str | None = None,
        keys: Sequence[str] = (),
        attempts: int | None = None,
    ) -> T:
        """Run `body` in a transaction, commit, then run its after-commit actions; re-run it on
        a transient error, `attempts` times at most (default: the component's). `key` (or
        several, `keys`: taken in sorted order, so two callers never wait on each other) runs it
        after, and before, the other transactions of that key in this process."""
        attempts = attempts or self.attempts
        held = sorted({*keys, *([key] if key is not None else [])})
        async with contextlib.AsyncExitStack() as stack:
            for one in held:
                await stack.enter_async_context(self._locks.hold(one))
            return await self._transaction(body, attempts)

    async def _transaction(self, body: Callable[[U], Awaitable[T]], attempts: int) -> T:
        uow, outcome = await retry_transient(
            lambda: self._attempt(body),
            attempts=attempts,
            service=self.service,
            on_retry=self._on_retry,
        )
        # After the session ended: side effects must not hold it.
        await uow.run_after_commit()
        if uow.emitted and self.on_events is not None:
            self.on_events()
        if isinstance(outcome, KeepWrites):
            raise outcome.error
        return outcome

    async def _attempt(self, body: Callable[[U], Awaitable[T]]) -> tuple[U, T | KeepWrites]:
        async with self.client.start_session() as session:
            uow = self._unit_of_work(self.db, session)
            await session.start_transaction()
            try:
                outcome: T | KeepWrites
                try:
                    outcome = await body(uow)
                except KeepWrites as keep:
                    outcome = keep
                await _commit(session)
            except BaseException:
                await _abort(session)
                raise
        return uow, outcome


async def _commit(session: AsyncClientSession) -> None:
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            await session.commit_transaction()
            return
        except PyMongoError as exc:
            if exc.has_error_label(UNKNOWN_COMMIT) and attempt < COMMIT_ATTEMPTS:
                continue  # committing is idempotent: ask again
            raise


async def _abort(session: AsyncClientSession) -> None:
    if session.in_transaction:
        with contextlib.suppress(PyMongoError):
            await session.abort_transaction()
