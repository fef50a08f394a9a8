"""Idempotency stores: "has this consumer group already handled event X?", answered atomically.

`claim(group, event_ids)` opens a transaction and records the ids in it. It yields a Claim: the
transaction handle (an asyncpg connection, a Mongo session) for handlers to write through, and
the ids that were not recorded before (`fresh`). On a clean exit the records and the handlers'
writes commit together; on an exception both roll back, so a retry finds the ids unclaimed. A
handler whose effects live elsewhere (an HTTP call, an e-mail) gets at-least-once, not
exactly-once. Claiming a batch of ids in one transaction is what lets a consumer keep up: one
commit per batch instead of one per event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Claim(Generic[T]):
    tx: T
    fresh: frozenset[str]


class IdempotencyStore(Protocol[T]):
    def claim(self, group: str, event_ids: Sequence[str]) -> AbstractAsyncContextManager[Claim[T]]:
        """A transaction recording the ids; `fresh` holds those not recorded before."""
        ...

    async def purge(self, older_than: timedelta) -> int:
        """Forget ids recorded longer ago than `older_than`; how many were forgotten."""
        ...


PROCESSED_EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS processed_events (
    consumer_group text NOT NULL,
    event_id       text NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_at ON processed_events (processed_at);
"""

_CLAIM = """
INSERT INTO processed_events (consumer_group, event_id) SELECT $1, unnest($2::text[])
ON CONFLICT DO NOTHING RETURNING event_id
"""


class PgIdempotencyStore:
    """`processed_events` in the service's own database; handlers get the asyncpg connection."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool  # an asyncpg.Pool

    @asynccontextmanager
    async def claim(self, group: str, event_ids: Sequence[str]) -> AsyncIterator[Claim[Any]]:
        async with self.pool.acquire() as conn, conn.transaction():
            # A concurrent claim of the same id blocks on the key until the first commits.
            rows = await conn.fetch(_CLAIM, group, list(event_ids))
            yield Claim(conn, frozenset(row["event_id"] for row in rows))

    async def purge(self, older_than: timedelta) -> int:
        """Forget ids older than the longest redelivery window you care about."""
        status: str = await self.pool.execute(
            "DELETE FROM processed_events WHERE processed_at < now() - $1::interval", older_than
        )
        return int(status.rsplit(" ", 1)[-1])


PROCESSED_COLLECTION = "processed_events"
Doc = dict[str, Any]


class MongoIdempotencyStore:
    """`processed_events` in the service's database; handlers get the session (in a transaction).

    A TTL index forgets ids after `retention` (the longest redelivery window worth covering).
    """

    def __init__(self, db: AsyncDatabase[Doc], *, retention: timedelta = timedelta(days=7)) -> None:
        self.db = db
        self.retention = retention

    async def ensure_indexes(self) -> None:
        await self.db[PROCESSED_COLLECTION].create_index(
            [("processed_at", ASCENDING)],
            name="processed_ttl",
            expireAfterSeconds=int(self.retention.total_seconds()),
        )

    @asynccontextmanager
    async def claim(
        self, group: str, event_ids: Sequence[str]
    ) -> AsyncIterator[Claim[AsyncClientSession]]:
        coll = self.db[PROCESSED_COLLECTION]
        keys = list(dict.fromkeys(f"{group}:{event_id}" for event_id in event_ids))
        async with (
            self.db.client.start_session() as session,
            await session.start_transaction(),
        ):
            # Inside the transaction: a concurrent claim of the same id makes one of the two
            # fail with a write conflict, and the consumer retries it.
            seen = {
                doc["_id"]
                async for doc in coll.find({"_id": {"$in": keys}}, {"_id": 1}, session=session)
            }
            now = datetime.now(UTC)
            fresh = [key for key in keys if key not in seen]
            if fresh:
                await coll.insert_many(
                    [{"_id": key, "processed_at": now} for key in fresh], session=session
                )
            prefix = len(group) + 1
            yield Claim(session, frozenset(key[prefix:] for key in fresh))

    async def purge(self, older_than: timedelta) -> int:
        """The TTL index forgets them too; this covers servers whose TTL monitor lags or is
        missing (the local stand-in)."""
        cutoff = datetime.now(UTC) - older_than
        result = await self.db[PROCESSED_COLLECTION].delete_many({"processed_at": {"$lt": cutoff}})
        return int(result.deleted_count)
