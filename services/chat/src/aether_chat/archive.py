"""Retention: messages past `CHAT_MESSAGE_RETENTION_DAYS` are written to chat's archive bucket as
Parquet, then deleted from MongoDB (docs/chat.md "Retention and the archive"). One code path
for both callers: the ArchiveExpiredMessages RPC (the worker's daily job, or an admin) and the
fallback RetentionJob (retention.py).

Days are UTC days, and only whole days go: the cutoff is a midnight, so a day is archived once,
after its last message is past retention (a message's id is made at its creation, so no message
is ever added to a past day). One object per (day, room):
`chat-archive/messages/<YYYY-MM-DD>/<room_id>.parquet`, its rows ordered by seq.

A day is moved in this order, so that a crash anywhere loses nothing and duplicates nothing:

1. read the day's messages from MongoDB (an `_id` range: ids are UUIDv7, time first);
2. per room, read the object if one exists (an earlier run that stopped before or during its
   deletes wrote it) and merge: one row per message id, MongoDB's copy wins;
3. write the object (an overwrite of the same key), read it back and compare sha256 and rows;
4. delete exactly the messages read in 1 and unchanged since (`edited_at`, `deleted`): one
   edited or tombstoned meanwhile stays, and the next run merges its new state into the object.

Reading MongoDB before the object is what makes two runs at once safe (the worker's and a
replica's fallback): a message some run has deleted was in that run's object before the delete,
so any later run sees it either still in MongoDB or already in the object.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
from redis.exceptions import RedisError

from aether_chat import ids, repository
from aether_chat.cache import ChatCache
from aether_chat.metrics import ARCHIVED_MESSAGES, RETENTION_DELETED
from aether_chat.repository import Ctx, MessageRecord
from aether_common.errors import NotFound, ValidationFailed
from aether_common.logging import get_logger
from aether_common.s3 import S3Bucket

log = get_logger(__name__)

PREFIX = "chat-archive/messages"
CONTENT_TYPE = "application/vnd.apache.parquet"
_TIME = pa.timestamp("ms", tz="UTC")
# Every field of a stored message (repository.MessageRecord), `message_id` for `_id`.
SCHEMA = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("room_id", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("sender_id", pa.string(), nullable=False),
        pa.field("client_msg_id", pa.string(), nullable=False),
        pa.field("content", pa.string(), nullable=False),
        pa.field("mentions", pa.list_(pa.string()), nullable=False),
        pa.field("reply_to_seq", pa.int64(), nullable=False),
        pa.field("created_at", _TIME, nullable=False),
        pa.field("edited_at", _TIME),
        pa.field("deleted", pa.bool_(), nullable=False),
        pa.field("deleted_by", pa.string(), nullable=False),
        pa.field("deleted_at", _TIME),
    ]
)


class ArchiveError(RuntimeError):
    """An object that is not what was written: nothing of its room and day is deleted."""


def object_key(day: date, room_id: str) -> str:
    return f"{PREFIX}/{day.isoformat()}/{room_id}.parquet"


def encode(rows: Sequence[MessageRecord]) -> bytes:
    columns = {
        "message_id": [m.id for m in rows],
        "room_id": [m.room_id for m in rows],
        "seq": [m.seq for m in rows],
        "sender_id": [m.sender_id for m in rows],
        "client_msg_id": [m.client_msg_id for m in rows],
        "content": [m.content for m in rows],
        "mentions": [list(m.mentions) for m in rows],
        "reply_to_seq": [m.reply_to_seq for m in rows],
        "created_at": [m.created_at for m in rows],
        "edited_at": [m.edited_at for m in rows],
        "deleted": [m.deleted for m in rows],
        "deleted_by": [m.deleted_by for m in rows],
        "deleted_at": [m.deleted_at for m in rows],
    }
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def decode(data: bytes) -> list[MessageRecord]:
    table = pq.read_table(io.BytesIO(data), schema=SCHEMA)
    return [
        MessageRecord(
            id=row["message_id"],
            room_id=row["room_id"],
            seq=row["seq"],
            sender_id=row["sender_id"],
            client_msg_id=row["client_msg_id"],
            content=row["content"],
            mentions=tuple(row["mentions"]),
            reply_to_seq=row["reply_to_seq"],
            created_at=row["created_at"],
            edited_at=row["edited_at"],
            deleted=row["deleted"],
            deleted_by=row["deleted_by"],
            deleted_at=row["deleted_at"],
        )
        for row in table.to_pylist()
    ]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def midnight(moment: datetime) -> datetime:
    """The UTC midnight that starts `moment`'s day."""
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


@dataclass
class ArchiveRun:
    """What one run did: messages before `cutoff` were due."""

    cutoff: datetime
    archived: int = 0
    deleted: int = 0
    rooms: set[str] = field(default_factory=set)
    objects: list[str] = field(default_factory=list)


class OnDemandBucket(S3Bucket):
    """The archive's bucket, checked (and made, in dev and test) at the first run rather than at
    start: chat serves its users while S3 is away; only archiving waits for it."""

    _checked = False

    async def start(self) -> None:
        return None

    async def ready(self) -> bool:
        return True  # readiness is chat's users' path, which never needs the archive

    async def ensure(self) -> None:
        if not self._checked:
            await super().start()
            self._checked = True


class MessageArchive:
    """Archive-then-purge of messages past retention (the module docstring's order)."""

    def __init__(
        self,
        reader: Ctx,
        bucket: OnDemandBucket,
        cache: ChatCache,
        *,
        retention_days: int,
        delete_batch: int,
    ) -> None:
        self._reader = reader
        self._bucket = bucket
        self._cache = cache
        self._retention = timedelta(days=retention_days)
        self._delete_batch = delete_batch
        # One run at a time in this process (the RPC and the fallback may meet).
        self._lock = asyncio.Lock()

    @property
    def bucket(self) -> str:
        return self._bucket.bucket

    def cutoff(self, before: datetime | None = None) -> datetime:
        """The midnight messages before which are due: that of now less the retention, or of
        `before` when it is earlier (a later one would delete messages still kept)."""
        kept_from = ids.now() - self._retention
        if before is None:
            return midnight(kept_from)
        if before.tzinfo is None:
            before = before.replace(tzinfo=UTC)
        if before > kept_from:
            raise ValidationFailed(
                f"before: at most {ids.rfc3339(kept_from)}, now less the retention "
                "(CHAT_MESSAGE_RETENTION_DAYS): later messages are still kept",
                field_errors={"before": "later than the retention allows"},
            )
        return midnight(before)

    async def run(self, before: datetime | None = None) -> ArchiveRun:
        """Archive, then delete, every message created before the cutoff, day by day."""
        done = ArchiveRun(self.cutoff(before))
        bound = ids.id_floor(done.cutoff)
        async with self._lock:
            low = "0"  # below every UUID string
            while True:
                first = await repository.first_message_id(self._reader, low, bound)
                if first is None:
                    break
                day = midnight(_id_time(first))
                low = ids.id_floor(day + timedelta(days=1))
                await self._archive_day(day.date(), first, min(low, bound), done)
        if done.archived:
            ARCHIVED_MESSAGES.inc(done.archived)
            RETENTION_DELETED.inc(done.deleted)
            log.info(
                "messages past retention archived",
                archived=done.archived,
                deleted=done.deleted,
                objects=len(done.objects),
                cutoff=ids.rfc3339(done.cutoff),
            )
        return done

    async def _archive_day(self, day: date, low: str, high: str, done: ArchiveRun) -> None:
        by_room: dict[str, list[MessageRecord]] = {}
        for message in await repository.messages_in_id_range(self._reader, low, high):
            by_room.setdefault(message.room_id, []).append(message)
        for room_id, stored in sorted(by_room.items()):
            key = await self.write_object(day, room_id, stored)
            done.archived += len(stored)
            done.objects.append(key)
            done.rooms.add(room_id)
            for start in range(0, len(stored), self._delete_batch):
                chunk = stored[start : start + self._delete_batch]
                done.deleted += await repository.delete_unchanged(self._reader, chunk)
        await self._forget(by_room)

    async def write_object(self, day: date, room_id: str, stored: Sequence[MessageRecord]) -> str:
        """Write the (day, room) object holding `stored` and what an earlier run put there;
        return its key once read back intact. The first step of a day, and a test's way to stop
        a run between its archive and its delete."""
        await self._bucket.ensure()
        key = object_key(day, room_id)
        try:
            kept = {m.id: m for m in await asyncio.to_thread(decode, await self._bucket.get(key))}
        except NotFound:
            kept = {}
        kept.update((m.id, m) for m in stored)
        rows = sorted(kept.values(), key=lambda m: m.seq)
        data = await asyncio.to_thread(encode, rows)
        await self._bucket.put(key, data, content_type=CONTENT_TYPE)
        back = await self._bucket.get(key)
        if sha256(back) != sha256(data) or await asyncio.to_thread(decode, back) != rows:
            raise ArchiveError(f"{key} read back differs from what was written; nothing deleted")
        return key

    async def _forget(self, rooms: Iterable[str]) -> None:
        """Cached history pages of these rooms may hold deleted messages: bump their versions."""
        rooms = list(rooms)
        if not rooms:
            return
        try:
            await self._cache.bump(rooms=rooms)
        except RedisError as exc:
            log.warning("cache versions not bumped after retention", error=repr(exc))


def _id_time(message_id: str) -> datetime:
    """The creation time a UUIDv7 id leads with (milliseconds)."""
    ms = int(message_id.replace("-", "")[:12], 16)
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
