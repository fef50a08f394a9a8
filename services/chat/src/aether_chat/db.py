"""The MongoDB client (a lifecycle Component) and the unit of work the boundary opens.

Transport adapters (grpc.py) run `await database.transaction(body, key=...)`: `body(uow)` is the
service call; it writes through `uow.session`, queues events with `uow.emit()` (the outbox, same
transaction) and real-time effects with `uow.changes` (frames to publish, cache versions to
bump). The database commits; the service never does. After the commit the changes go to Redis
(`on_commit`), and a failure there is logged, never raised: the state is committed.

A write conflict (another transaction wrote the same document first: MongoDB's
TransientTransactionError) re-runs the whole body, a bounded number of times. Transactions with
the same `key` (a room) are serialised inside this process first, so one replica never races
itself for a room's seq counter; only replicas race, and they retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, PyMongoError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aether_chat import repository
from aether_chat.metrics import TRANSACTION_RETRIES
from aether_common.errors import Unavailable
from aether_common.events import Event, outbox_mongo
from aether_common.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")
Doc = dict[str, Any]

# A datastore away, not a bad request: the caller may retry (UNAVAILABLE, not INTERNAL).
OUTAGES: tuple[type[BaseException], ...] = (
    ConnectionFailure,  # includes AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
    RedisConnectionError,
    RedisTimeoutError,
)
TRANSIENT = "TransientTransactionError"
UNKNOWN_COMMIT = "UnknownTransactionCommitResult"
COMMIT_ATTEMPTS = 3


@dataclass
class Changes:
    """What a committed unit of work tells the outside world (applied after the commit)."""

    # (room_id, frame type, JSON bytes)
    frames: list[tuple[str, str, bytes]] = field(default_factory=list)
    rooms: set[str] = field(default_factory=set)  # room versions to bump (caches)
    users: set[str] = field(default_factory=set)  # user versions to bump (room lists)
    presence_gone: set[str] = field(default_factory=set)  # users whose presence to clear

    def publish(self, room_id: str, frame: dict[str, Any]) -> None:
        """Queue a docs/chat.md frame for the room's channel, serialised once here."""
        self.frames.append((room_id, frame["type"], orjson.dumps(frame)))

    def __bool__(self) -> bool:
        return bool(self.frames or self.rooms or self.users or self.presence_gone)


OnCommit = Callable[[Changes], Awaitable[None]]


class UnitOfWork:
    """One transaction: its session, its outbox events, its post-commit changes."""

    def __init__(self, db: AsyncDatabase[Doc], session: AsyncClientSession) -> None:
        self._db = db
        self._session = session
        self.changes = Changes()

    @property
    def db(self) -> AsyncDatabase[Doc]:
        return self._db

    @property
    def session(self) -> AsyncClientSession:
        return self._session

    async def emit(self, *events: Event[Any]) -> None:
        """Queue events in the outbox: published only if this transaction commits."""
        await outbox_mongo.add_many(self._db, self._session, events)

    async def restart(self) -> None:
        """Drop everything written so far and go on in a fresh transaction (after a write error
        that aborted the transaction on the server, e.g. a duplicate key)."""
        if self._session.in_transaction:
            await self._session.abort_transaction()
        self.changes = Changes()
        await self._session.start_transaction()


@dataclass(frozen=True, slots=True)
class Reader:
    """Reads outside any transaction (a `repository.Ctx` without a session)."""

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


class Database:
    """Component: the MongoDB client; creates the indexes at start."""

    name = "mongo"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        pool_size: int = 100,
        attempts: int = 20,
        on_commit: OnCommit | None = None,
    ) -> None:
        # Connects lazily; short selection timeout so an outage fails calls fast.
        self.client: AsyncMongoClient[Doc] = AsyncMongoClient(
            url,
            tz_aware=True,
            maxPoolSize=pool_size,
            serverSelectionTimeoutMS=5_000,
            connectTimeoutMS=5_000,
            appname="aether-chat",
        )
        self.db: AsyncDatabase[Doc] = self.client[database]
        self.reader = Reader(self.db)
        self.attempts = attempts
        self.on_commit = on_commit
        self._locks = _KeyedLocks()

    async def start(self) -> None:
        await self.client.admin.command("ping")
        await repository.ensure_indexes(self.db)
        await outbox_mongo.ensure_indexes(self.db)

    async def stop(self) -> None:
        await self.client.close()

    async def ready(self) -> bool:
        try:
            await self.client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def transaction(
        self, body: Callable[[UnitOfWork], Awaitable[T]], *, key: str | None = None
    ) -> T:
        """Run `body` in a transaction (re-run on write conflicts), commit, apply its changes.

        With `key`, transactions of this process with the same key run one after the other,
        changes included (so a room's frames leave in seq order).
        """
        try:
            if key is None:
                return await self._transaction(body)
            async with self._locks.hold(key):
                return await self._transaction(body)
        except OUTAGES as exc:
            log.warning("datastore outage", error=repr(exc))
            raise Unavailable("the chat service's database is unavailable; retry") from exc

    async def _transaction(self, body: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            attempt += 1
            async with self.client.start_session() as session:
                uow = UnitOfWork(self.db, session)
                await session.start_transaction()
                try:
                    result = await body(uow)
                    await self._commit(session)
                except PyMongoError as exc:
                    await _abort(session)
                    # A write conflict: run again. A server away: say so now (each attempt
                    # would wait out server selection).
                    conflict = exc.has_error_label(TRANSIENT) and not isinstance(
                        exc, ConnectionFailure
                    )
                    if conflict and attempt < self.attempts:
                        TRANSACTION_RETRIES.inc()
                        # Jittered, growing pause: the other writer finishes meanwhile.
                        await asyncio.sleep(random.uniform(0, min(0.05, 0.002 * 2**attempt)))  # noqa: S311
                        continue
                    raise
                except BaseException:
                    await _abort(session)
                    raise
            if uow.changes and self.on_commit is not None:
                await self.on_commit(uow.changes)
            return result

    @staticmethod
    async def _commit(session: AsyncClientSession) -> None:
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                await session.commit_transaction()
                return
            except PyMongoError as exc:
                if exc.has_error_label(UNKNOWN_COMMIT) and attempt < COMMIT_ATTEMPTS:
                    continue  # commit is idempotent: ask again
                raise


async def _abort(session: AsyncClientSession) -> None:
    if session.in_transaction:
        with contextlib.suppress(PyMongoError):
            await session.abort_transaction()
