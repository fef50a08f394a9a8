"""Transactional outbox on PostgreSQL: events commit or roll back with the state change.

A service copies `OUTBOX_DDL` into one of its migrations, calls `add(conn, event)` inside the
transaction that changes state (or, to spare that transaction's round trips, inserts the
`outbox_row(event)` values into `OUTBOX_TABLE` in the same statement as the change: a
data-modifying CTE), and runs a `PgOutboxRelay`. An idle relay is woken by a NOTIFY
sent on commit (never on rollback); a busy one polls every few milliseconds instead, and either
way a slow poll covers a lost notification. A session advisory lock makes one replica drain at
a time; the others wait and take over when its connection goes away. Marking rows sent uses
asynchronous commit: a mark lost in a crash only means that row is sent again.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from aether.events.v1.envelope_pb2 import EventEnvelope
from aether_common.events.envelope import Event
from aether_common.events.producer import EventProducer
from aether_common.events.relay import OutboxRelay, OutboxRow, RelayOptions
from aether_common.events.topics import TopicSpec

OUTBOX_TABLE = "event_outbox"
OUTBOX_CHANNEL = "event_outbox"
# Same keys for every replica of a service (each service owns its own database).
RELAY_LOCK_KEY = zlib.crc32(b"aether.event_outbox.relay")
NOTIFY_GATE_KEY = 2628869848  # zlib.crc32(b"aether.event_outbox.notify_gate"), also in OUTBOX_DDL

# `seq` gives the drain order; rows are marked sent (not deleted) so an operator can see what
# left and when; the relay purges sent rows after a retention period.
#
# NOTIFY wakes a sleeping relay within milliseconds, but every notifying commit takes one
# database-wide lock, which showed up as write-latency tails under load. So writers notify only
# while the relay says it is listening (it does so only when idle; while busy it polls). A
# shared advisory lock, taken exclusively by the relay while it switches to listening, makes
# sure no writer can miss the switch (READ COMMITTED writers; others may wait for the poll).
OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS event_outbox (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   text NOT NULL,
    topic      text NOT NULL,
    envelope   bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX IF NOT EXISTS event_outbox_unsent ON event_outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS event_outbox_sent_at ON event_outbox (sent_at)
    WHERE sent_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS event_outbox_relay (
    id        int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    listening boolean NOT NULL DEFAULT true
);
INSERT INTO event_outbox_relay (id) VALUES (1) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION event_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(2628869848);  -- NOTIFY_GATE_KEY
    IF (SELECT listening FROM event_outbox_relay WHERE id = 1) THEN
        PERFORM pg_notify('event_outbox', '');
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER event_outbox_notify AFTER INSERT ON event_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION event_outbox_notify();
"""

# Scalar parameters, not arrays: asyncpg introspects array types on each new connection with a
# catalog query that can take ~100 ms (JIT), which showed up as p95 write latency.
_INSERT = "INSERT INTO event_outbox (event_id, topic, envelope) VALUES ($1, $2, $3)"
_FETCH = "SELECT seq, envelope FROM event_outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1"
# text[] rather than bigint[]: asyncpg has the text array codec built in, so no per-connection
# type introspection query.
_MARK = "UPDATE event_outbox SET sent_at = now() WHERE seq = ANY($1::text[]::bigint[])"
_COUNT = "SELECT count(*) FROM event_outbox WHERE sent_at IS NULL"
_PURGE = "DELETE FROM event_outbox WHERE sent_at < now() - $1::interval"


async def install(conn: Any) -> None:
    """Create the outbox table (tests and tools; services put OUTBOX_DDL in a migration)."""
    await conn.execute(OUTBOX_DDL)


async def add(conn: Any, event: Event[Any]) -> None:
    """Write an event in the caller's open transaction on `conn` (an asyncpg connection)."""
    await add_many(conn, [event])


def outbox_row(event: Event[Any]) -> tuple[str, str, bytes]:
    """The (event_id, topic, envelope) columns of an event's `event_outbox` row."""
    envelope = event.to_envelope()
    return envelope.id, envelope.type, envelope.SerializeToString()


async def add_many(conn: Any, events: Sequence[Event[Any]]) -> None:
    """Several events, in order, in one round trip (asyncpg pipelines executemany)."""
    if not conn.is_in_transaction():
        raise RuntimeError("outbox add() must run inside the transaction that changes state")
    rows = [outbox_row(event) for event in events]
    if len(rows) == 1:
        await conn.execute(_INSERT, *rows[0])
    else:
        await conn.executemany(_INSERT, rows)


class PgOutboxRelay(OutboxRelay):
    """Drains `event_outbox` of the database at `dsn` to Kafka."""

    store = "postgres"

    def __init__(
        self,
        dsn: str,
        producer: EventProducer,
        *,
        topics: Sequence[TopicSpec] = (),
        options: RelayOptions | None = None,
        name: str = "outbox-relay-pg",
    ) -> None:
        super().__init__(producer, topics=topics, options=options, name=name)
        self.dsn = dsn
        self._conn: Any = None

    async def _open(self) -> None:
        # One dedicated connection: it holds the advisory lock and the LISTEN.
        # Marks need no fsync: one lost in a crash only means that row is sent again, which
        # at-least-once delivery allows; waiting for the flush would slow every batch.
        self._conn = await asyncpg.connect(self.dsn, server_settings={"synchronous_commit": "off"})
        await self._conn.add_listener(OUTBOX_CHANNEL, self._on_notify)

    def _on_notify(self, *_: object) -> None:
        self.wake()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closing ends the session, which releases the advisory lock too.
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()

    async def _lead(self) -> bool:
        if self.leading:
            return True  # a session lock is held until the connection closes
        return bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY))

    async def _set_listening(self, listening: bool) -> None:
        async with self._conn.transaction():
            if listening:  # waits for writers that may have read the old value to commit
                await self._conn.execute("SELECT pg_advisory_xact_lock($1)", NOTIFY_GATE_KEY)
            await self._conn.execute("UPDATE event_outbox_relay SET listening = $1", listening)

    async def _fetch(self, limit: int) -> list[OutboxRow]:
        rows = await self._conn.fetch(_FETCH, limit)
        return [OutboxRow(row["seq"], EventEnvelope.FromString(row["envelope"])) for row in rows]

    async def _mark_sent(self, refs: list[Any]) -> None:
        await self._conn.execute(_MARK, [str(ref) for ref in refs])

    async def _count_pending(self) -> int:
        return int(await self._conn.fetchval(_COUNT))

    async def _purge_sent(self, older_than_s: float) -> int:
        status: str = await self._conn.execute(_PURGE, timedelta(seconds=older_than_s))
        return int(status.rsplit(" ", 1)[-1])
