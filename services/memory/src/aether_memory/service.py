"""The memory service's rules: who may touch which namespace, what is valid, and the write order
that keeps the index and the source of truth together.

Writes run inside a PostgreSQL transaction opened by the boundary (an RPC or a consumed event):
1. the records' advisory locks are taken (concurrent writers of one record queue up);
2. texts whose sha256 matches the stored one are not embedded again;
3. Qdrant is written first, then the rows; the boundary commits. A crash in between leaves
   Qdrant ahead; the retry re-embeds and writes both (idempotent), and searches meanwhile read
   texts from PostgreSQL, so a point without its row is never returned.
Deletes go the same way: Qdrant first, then PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aether_common.data_export import collect
from aether_common.errors import Forbidden
from aether_common.logging import get_logger
from aether_common.postgres import PostgresDatabase
from aether_memory import repository, validation
from aether_memory.callers import Caller, require_caller, require_operator
from aether_memory.config import MemorySettings
from aether_memory.embeddings import Embeddings
from aether_memory.export import MemoryExport
from aether_memory.index import Filters, IndexBuild, Point, VectorIndex
from aether_memory.metrics import RECORDS_DELETED, RECORDS_UPSERTED, SEARCH_DURATION
from aether_memory.namespaces import (
    NAMESPACES,
    Namespace,
    check_write,
    namespace,
    owner_scope,
)
from aether_memory.rooms import RoomMembership

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Draft:
    """A record to store. Owner, room and creation time only count for a new record."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    user_id: str = ""
    room_id: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """Drafts for one namespace and owner scope, validated and allowed."""

    namespace: Namespace
    scope: str
    drafts: list[Draft]


@dataclass(frozen=True, slots=True)
class Stored:
    ids: list[str]
    embedded: int


@dataclass(frozen=True, slots=True)
class RecordInput:
    """A record as a caller sent it (not validated yet)."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search as a caller sent it (not validated yet; 0 and "" mean "not given")."""

    namespace: str
    query: str
    limit: int = 0
    min_score: float = 0.0
    created_after: datetime | None = None
    created_before: datetime | None = None
    room_id: str = ""
    user_id: str = ""


@dataclass(frozen=True, slots=True)
class Found:
    """A search hit: the stored row (memory_records) and its similarity."""

    row: Any
    score: float


@dataclass(frozen=True, slots=True)
class Embedded:
    model: str
    dimensions: int
    vectors: list[list[float]]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """What the chat namespace keeps of a chat message (from chat's events)."""

    message_id: str
    room_id: str
    sender_id: str
    seq: int
    content: str
    deleted: bool
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class BuiltIndex:
    """RebuildIndex's answer: the namespace, what the engine did and how long the call waited."""

    namespace: Namespace
    build: IndexBuild
    duration_ms: int


class MemoryService:
    def __init__(
        self,
        *,
        settings: MemorySettings,
        database: PostgresDatabase,
        embeddings: Embeddings,
        index: VectorIndex,
        rooms: RoomMembership,
    ) -> None:
        self.settings = settings
        self._db = database
        self._embeddings = embeddings
        self._index = index
        self._rooms = rooms

    def caller(self) -> Caller:
        s = self.settings
        return require_caller(
            admin_role=s.admin_role, knowledge_permission=s.knowledge_write_permission
        )

    # -- the GDPR export -------------------------------------------------------------------------
    async def build_index(self, namespace_value: str) -> BuiltIndex:
        """Operators: the namespace's index built now (VectorIndex.build_index), waited for."""
        s = self.settings
        operator = require_operator(admin_role=s.admin_role, services=s.operator_services)
        ns = namespace(namespace_value)
        started = time.perf_counter()
        build = await self._index.build_index(ns.value)
        duration_ms = round((time.perf_counter() - started) * 1000)
        log.info(
            "index build asked",
            by=operator,
            namespace=ns.value,
            joined=build.joined,
            built=build.built,
            duration_ms=duration_ms,
        )
        return BuiltIndex(ns, build, duration_ms)

    async def export_my_data(self, conn: Any, caller: Caller) -> MemoryExport:
        """Every record keyed by the caller (export.py), streamed by a cursor;
        ExportTooLarge past MEMORY_EXPORT_MAX_RECORDS."""
        rows = await collect(
            repository.export_records(conn, caller.user_id),
            section="records",
            limit=self.settings.export_max_records,
        )
        return MemoryExport.of(caller.user_id, rows)

    # -- Upsert ------------------------------------------------------------------------------
    def upsert_batch(
        self, caller: Caller, namespace_name: str, records: Sequence[RecordInput]
    ) -> Batch:
        s = self.settings
        ns = namespace(namespace_name)
        check_write(ns, caller, s.knowledge_write_permission)
        if not records:
            raise validation.fail("records", "records: give at least one")
        if len(records) > s.max_records:
            raise validation.fail(
                "records", f"records: at most {s.max_records} per call (got {len(records)})"
            )
        drafts: list[Draft] = []
        seen: set[str] = set()
        for n, record in enumerate(records):
            where = f"records[{n}]"
            record_id = validation.record_id(record.id, f"{where}.id")
            if record_id in seen:
                raise validation.fail(f"{where}.id", f"{where}.id {record_id!r} appears twice")
            seen.add(record_id)
            drafts.append(
                Draft(
                    id=record_id,
                    text=validation.text(record.text, f"{where}.text", s.max_text_chars),
                    metadata=validation.metadata(
                        record.metadata, f"{where}.metadata", s.max_metadata_bytes
                    ),
                    user_id=caller.user_id,
                )
            )
        return Batch(ns, owner_scope(ns, caller), drafts)

    async def store(self, conn: Any, batch: Batch) -> Stored:
        """Embed what changed, write Qdrant, then the rows (committed by the caller)."""
        ns, scope = batch.namespace.value, batch.scope
        ids = [draft.id for draft in batch.drafts]
        await repository.lock(conn, ns, scope, ids)
        before = await repository.stored(conn, ns, scope, ids)
        now = datetime.now(UTC)
        rows: list[repository.Row] = []
        changed: list[repository.Row] = []
        for draft in batch.drafts:
            old = before.get(draft.id)
            digest = repository.text_digest(draft.text)
            row = repository.Row(
                id=draft.id,
                point_id=repository.point_id(ns, scope, draft.id),
                user_id=old.user_id if old else draft.user_id,
                room_id=draft.room_id or (old.room_id if old else ""),
                text=draft.text,
                text_sha256=digest,
                metadata=draft.metadata,
                created_at=old.created_at if old else (draft.created_at or now),
            )
            rows.append(row)
            if old is None or old.text_sha256 != digest or old.room_id != row.room_id:
                changed.append(row)
        if changed:
            vectors = await self._embeddings.embed([row.text for row in changed])
            points = [Point(r.point_id, r.user_id, r.room_id, r.created_at) for r in changed]
            await self._index.upsert(ns, points, vectors)
        await repository.write(conn, ns, scope, rows)
        RECORDS_UPSERTED.labels(ns, "embedded").inc(len(changed))
        RECORDS_UPSERTED.labels(ns, "unchanged").inc(len(rows) - len(changed))
        return Stored(ids, len(changed))

    # -- Delete ------------------------------------------------------------------------------
    def delete_target(
        self, caller: Caller, namespace_name: str, record_ids: Sequence[str]
    ) -> tuple[Namespace, str, list[str]]:
        ns = namespace(namespace_name)
        check_write(ns, caller, self.settings.knowledge_write_permission)
        ids = validation.existing_ids(record_ids, self.settings.max_records)
        return ns, owner_scope(ns, caller), ids

    async def remove(
        self, conn: Any, ns: Namespace, scope: str, ids: Sequence[str], reason: str
    ) -> int:
        """Qdrant first, then the rows; unknown ids are no error. How many rows went."""
        await repository.lock(conn, ns.value, scope, ids)
        await self._index.delete(ns.value, [repository.point_id(ns.value, scope, i) for i in ids])
        deleted = await repository.delete(conn, ns.value, scope, ids)
        RECORDS_DELETED.labels(ns.value, reason).inc(deleted)
        return deleted

    # -- Search ------------------------------------------------------------------------------
    async def search(self, caller: Caller, request: SearchQuery) -> list[Found]:
        s = self.settings
        ns = namespace(request.namespace)
        query = validation.text(request.query, "query", s.max_query_chars)
        limit = validation.limit(request.limit, default=s.default_limit, maximum=s.max_limit)
        min_score = validation.min_score(request.min_score)
        after, before = validation.time_range(request.created_after, request.created_before)
        filters = Filters(created_after=after, created_before=before)
        if ns is Namespace.MEMORIES:
            if request.room_id:
                raise validation.fail("room_id", "room_id applies only to the chat namespace")
            filters = replace(filters, user_id=caller.user_id)  # always the caller's own
        elif ns is Namespace.KNOWLEDGE:
            if request.room_id:
                raise validation.fail("room_id", "room_id applies only to the chat namespace")
            if request.user_id:
                filters = replace(filters, user_id=validation.user_id(request.user_id))
        else:
            if not request.room_id:
                raise validation.fail("room_id", "room_id is required to search chat")
            room_id = validation.room_id(request.room_id)
            user_id = validation.user_id(request.user_id) if request.user_id else None
            if not await self._rooms.is_member(room_id):
                raise Forbidden("only members of the room search its messages")
            filters = replace(filters, room_id=room_id, user_id=user_id)

        started = time.perf_counter()
        vector = (await self._embeddings.embed([query]))[0]
        hits = await self._index.search(
            ns.value, vector.tolist(), filters=filters, limit=limit, min_score=min_score
        )
        async with self._db.connection() as conn:
            rows = await repository.by_points(conn, ns.value, [h.point_id for h in hits])
        SEARCH_DURATION.labels(ns.value).observe(time.perf_counter() - started)
        return [Found(rows[hit.point_id], hit.score) for hit in hits if hit.point_id in rows]

    # -- Embed -------------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str]) -> Embedded:
        s = self.settings
        valid = validation.texts(
            texts, "texts", max_count=s.max_records, max_chars=s.max_text_chars
        )
        vectors = await self._embeddings.embed(valid)
        return Embedded(
            self._embeddings.model, self._embeddings.dimensions, [row.tolist() for row in vectors]
        )

    # -- events ------------------------------------------------------------------------------
    def chat_batch(self, message: ChatMessage) -> Batch | None:
        """The "chat" record of a created or edited message (None: nothing to embed)."""
        if message.deleted or not message.content.strip() or not message.message_id:
            return None
        draft = Draft(
            id=message.message_id,
            text=message.content[: self.settings.max_text_chars],
            metadata={"seq": message.seq},
            user_id=message.sender_id,
            room_id=message.room_id,
            created_at=message.created_at,
        )
        return Batch(Namespace.CHAT, "", [draft])

    async def erase_user(self, conn: Any, user_id: str) -> int:
        """Every record of a deleted account, in every namespace: Qdrant first, then the rows."""
        for ns in NAMESPACES:
            await self._index.delete_user(ns.value, user_id)
        erased = await repository.delete_user(conn, user_id)
        for ns_name, count in erased.items():
            RECORDS_DELETED.labels(ns_name, "user_deleted").inc(count)
        return sum(erased.values())
