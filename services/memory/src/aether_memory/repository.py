"""Every PostgreSQL query of the memory service (table `memory_records`, migrations/0001)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Fixed namespace of the point ids (uuid5): the same record always maps to the same point.
POINT_NAMESPACE = uuid.UUID("6f1c2e0a-3b7d-5c1e-9a64-8d2f0b7e4a11")


def point_id(namespace: str, scope: str, record_id: str) -> uuid.UUID:
    """The Qdrant point of a record: uuid5(namespace, owner scope, id)."""
    return uuid.uuid5(POINT_NAMESPACE, f"{namespace}\x1f{scope}\x1f{record_id}")


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@dataclass(frozen=True, slots=True)
class Stored:
    """What an upsert needs to know about a record already there."""

    text_sha256: bytes
    user_id: str
    room_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Row:
    """A record to write (insert, or replace text and metadata)."""

    id: str
    point_id: uuid.UUID
    user_id: str
    room_id: str
    text: str
    text_sha256: bytes
    metadata: dict[str, Any]
    created_at: datetime


async def lock(conn: Any, namespace: str, scope: str, ids: Sequence[str]) -> None:
    """Serialise writers of the same records until this transaction ends, so Qdrant and
    PostgreSQL see concurrent writes of one record in the same order."""
    await lock_points(conn, [point_id(namespace, scope, i) for i in ids])


async def lock_points(conn: Any, point_ids: Sequence[uuid.UUID]) -> None:
    # Sorted, so two transactions never wait on each other's keys (no deadlock).
    keys = sorted({int.from_bytes(p.bytes[:8], "big", signed=True) for p in point_ids})
    await conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k", keys)


async def stored(conn: Any, namespace: str, scope: str, ids: Sequence[str]) -> dict[str, Stored]:
    rows = await conn.fetch(
        """
        SELECT id, text_sha256, user_id, room_id, created_at FROM memory_records
        WHERE namespace = $1 AND owner_scope = $2 AND id = ANY($3::text[])
        """,
        namespace,
        scope,
        list(ids),
    )
    return {
        row["id"]: Stored(row["text_sha256"], row["user_id"], row["room_id"], row["created_at"])
        for row in rows
    }


async def write(conn: Any, namespace: str, scope: str, rows: Sequence[Row]) -> None:
    """Insert or replace; a replaced record keeps its owner and creation time."""
    await conn.executemany(
        """
        INSERT INTO memory_records AS r (namespace, owner_scope, id, point_id, user_id, room_id,
                                         text, text_sha256, metadata, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
        ON CONFLICT (namespace, owner_scope, id) DO UPDATE
        SET text = EXCLUDED.text, text_sha256 = EXCLUDED.text_sha256,
            metadata = EXCLUDED.metadata, room_id = EXCLUDED.room_id, updated_at = now()
        """,
        [
            (
                namespace,
                scope,
                row.id,
                row.point_id,
                row.user_id,
                row.room_id,
                row.text,
                row.text_sha256,
                row.metadata,
                row.created_at,
            )
            for row in rows
        ],
    )


async def delete(conn: Any, namespace: str, scope: str, ids: Sequence[str]) -> int:
    status: str = await conn.execute(
        "DELETE FROM memory_records WHERE namespace = $1 AND owner_scope = $2 AND id = ANY($3)",
        namespace,
        scope,
        list(ids),
    )
    return int(status.rsplit(" ", 1)[-1])


async def delete_user(conn: Any, user_id: str) -> dict[str, int]:
    """Every record of the user, in every namespace; how many per namespace."""
    rows = await conn.fetch(
        """
        WITH gone AS (DELETE FROM memory_records WHERE user_id = $1 RETURNING namespace)
        SELECT namespace, count(*) AS n FROM gone GROUP BY namespace
        """,
        user_id,
    )
    return {row["namespace"]: int(row["n"]) for row in rows}


async def by_points(
    conn: Any, namespace: str, point_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Any]:
    """Records of search hits, by point id (an orphan point has no row and is left out)."""
    rows = await conn.fetch(
        """
        SELECT point_id, id, user_id, room_id, text, metadata, created_at FROM memory_records
        WHERE namespace = $1 AND point_id = ANY($2::uuid[])
        """,
        namespace,
        list(point_ids),
    )
    return {row["point_id"]: row for row in rows}


async def page(
    conn: Any, namespace: str, after: tuple[str, str], limit: int
) -> list[tuple[str, str, uuid.UUID]]:
    """(owner_scope, id, point_id) of a namespace's records after `after`, in key order."""
    rows = await conn.fetch(
        """
        SELECT owner_scope, id, point_id FROM memory_records
        WHERE namespace = $1 AND (owner_scope, id) > ($2, $3)
        ORDER BY owner_scope, id LIMIT $4
        """,
        namespace,
        after[0],
        after[1],
        limit,
    )
    return [(row["owner_scope"], row["id"], row["point_id"]) for row in rows]


# -- the GDPR export (export.py) -------------------------------------------------------------------
# Rows fetched per round trip by the export's cursor (it needs the transaction the RPC opens).
EXPORT_PREFETCH = 500


@dataclass(frozen=True, slots=True)
class ExportRow:
    namespace: str
    id: str
    room_id: str
    text: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


async def export_records(conn: Any, user_id: str) -> AsyncIterator[ExportRow]:
    """Every record keyed by the user (owner, writer or sender: the `memory_records_user`
    index), by namespace then age; not the vectors (Qdrant's, computed from `text`)."""
    cursor = conn.cursor(
        """
        SELECT namespace, id, room_id, text, metadata, created_at, updated_at
        FROM memory_records WHERE user_id = $1 ORDER BY namespace, created_at, id
        """,
        user_id,
        prefetch=EXPORT_PREFETCH,
    )
    async for row in cursor:
        yield ExportRow(
            namespace=row["namespace"],
            id=row["id"],
            room_id=row["room_id"],
            text=row["text"],
            metadata=row["metadata"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
