"""Every MongoDB query of the chat service, and the records they return.

Collections (database `CHAT_MONGO_DATABASE`):
- `rooms`: `_id` (UUIDv7), name, description, visibility, owner_id, created_at, `last_seq` (the
  per-room counter), member_count, last_message_id, last_activity_at;
- `members`: room_id, user_id, role, joined_at, last_read_seq; unique (room_id, user_id), and
  (user_id, room_id) for "my rooms";
- `invites`: `_id` = "<room_id>:<user_id>", invited_by, created_at (private rooms);
- `messages`: `_id` (UUIDv7 message id), room_id, seq, sender_id, client_msg_id, content,
  mentions, reply_to_seq, created_at, edited_at, deleted, deleted_by, deleted_at; unique
  (room_id, seq) for history, unique (room_id, sender_id, client_msg_id) for idempotent sends,
  (sender_id) for erasure; retention archives and deletes by `_id` range (ids lead with their
  time: one UTC day is the range [id_floor(midnight), id_floor(next midnight))).
- `event_outbox` (aether_common.events.outbox_mongo) and `processed_events` (the consumer).

The local MongoDB (secantusdb) sorts after reading every key in range, so history reads always
bound `seq` on both sides (seqs are dense: 1, 2, 3... per room).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from pymongo import ASCENDING, DeleteOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

Doc = dict[str, Any]

ROOMS = "rooms"
MEMBERS = "members"
INVITES = "invites"
MESSAGES = "messages"
DUPLICATE_KEY = 11000


class Ctx(Protocol):
    """Where a query runs: the database and, inside a transaction, its session."""

    @property
    def db(self) -> AsyncDatabase[Doc]: ...

    @property
    def session(self) -> AsyncClientSession | None: ...


class Role(StrEnum):
    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"

    @property
    def moderates(self) -> bool:
        return self is not Role.MEMBER


class Visibility(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True, slots=True)
class RoomRecord:
    id: str
    name: str
    description: str
    visibility: Visibility
    owner_id: str
    created_at: datetime
    last_seq: int
    member_count: int
    last_message_id: str | None
    last_activity_at: datetime

    @classmethod
    def from_doc(cls, doc: Doc) -> RoomRecord:
        return cls(
            id=doc["_id"],
            name=doc["name"],
            description=doc.get("description", ""),
            visibility=Visibility(doc["visibility"]),
            owner_id=doc.get("owner_id", ""),
            created_at=doc["created_at"],
            last_seq=int(doc.get("last_seq", 0)),
            member_count=int(doc.get("member_count", 0)),
            last_message_id=doc.get("last_message_id"),
            last_activity_at=doc.get("last_activity_at") or doc["created_at"],
        )

    def to_doc(self) -> Doc:
        return {
            "_id": self.id,
            "name": self.name,
            "description": self.description,
            "visibility": self.visibility.value,
            "owner_id": self.owner_id,
            "created_at": self.created_at,
            "last_seq": self.last_seq,
            "member_count": self.member_count,
            "last_message_id": self.last_message_id,
            "last_activity_at": self.last_activity_at,
        }


@dataclass(frozen=True, slots=True)
class MemberRecord:
    room_id: str
    user_id: str
    role: Role
    joined_at: datetime
    last_read_seq: int

    @classmethod
    def from_doc(cls, doc: Doc) -> MemberRecord:
        return cls(
            room_id=doc["room_id"],
            user_id=doc["user_id"],
            role=Role(doc["role"]),
            joined_at=doc["joined_at"],
            last_read_seq=int(doc.get("last_read_seq", 0)),
        )

    def to_doc(self) -> Doc:
        return {
            "room_id": self.room_id,
            "user_id": self.user_id,
            "role": self.role.value,
            "joined_at": self.joined_at,
            "last_read_seq": self.last_read_seq,
        }


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: str
    room_id: str
    seq: int
    sender_id: str
    client_msg_id: str
    content: str
    mentions: tuple[str, ...]
    reply_to_seq: int
    created_at: datetime
    edited_at: datetime | None = None
    deleted: bool = False
    deleted_by: str = ""
    deleted_at: datetime | None = None

    @classmethod
    def from_doc(cls, doc: Doc) -> MessageRecord:
        return cls(
            id=doc["_id"],
            room_id=doc["room_id"],
            seq=int(doc["seq"]),
            sender_id=doc["sender_id"],
            client_msg_id=doc["client_msg_id"],
            content=doc.get("content", ""),
            mentions=tuple(doc.get("mentions") or ()),
            reply_to_seq=int(doc.get("reply_to_seq", 0)),
            created_at=doc["created_at"],
            edited_at=doc.get("edited_at"),
            deleted=bool(doc.get("deleted", False)),
            deleted_by=doc.get("deleted_by", ""),
            deleted_at=doc.get("deleted_at"),
        )

    def to_doc(self) -> Doc:
        return {
            "_id": self.id,
            "room_id": self.room_id,
            "seq": self.seq,
            "sender_id": self.sender_id,
            "client_msg_id": self.client_msg_id,
            "content": self.content,
            "mentions": list(self.mentions),
            "reply_to_seq": self.reply_to_seq,
            "created_at": self.created_at,
            "edited_at": self.edited_at,
            "deleted": self.deleted,
            "deleted_by": self.deleted_by,
            "deleted_at": self.deleted_at,
        }


def _coll(ctx: Ctx, name: str) -> AsyncCollection[Doc]:
    return ctx.db[name]


async def ensure_indexes(db: AsyncDatabase[Doc]) -> None:
    """Run at start (creating an index also creates its collection, which a transaction cannot)."""
    await db[MEMBERS].create_index(
        [("room_id", ASCENDING), ("user_id", ASCENDING)], unique=True, name="room_user"
    )
    await db[MEMBERS].create_index(
        [("user_id", ASCENDING), ("room_id", ASCENDING)], name="user_rooms"
    )
    await db[INVITES].create_index([("user_id", ASCENDING)], name="invitee")
    await db[MESSAGES].create_index(
        [("room_id", ASCENDING), ("seq", ASCENDING)], unique=True, name="room_seq"
    )
    await db[MESSAGES].create_index(
        [("room_id", ASCENDING), ("sender_id", ASCENDING), ("client_msg_id", ASCENDING)],
        unique=True,
        name="idempotency",
    )
    await db[MESSAGES].create_index([("sender_id", ASCENDING)], name="sender")
    # `rooms` has only point reads by _id; make sure it exists before the first transaction.
    if ROOMS not in await db.list_collection_names(filter={"name": ROOMS}):
        await db.create_collection(ROOMS)


def is_idempotency_conflict(details: Mapping[str, Any] | None) -> bool:
    """True when a duplicate key error (one write's, or a bulk write's first) came from the
    (room, sender, client_msg_id) index."""
    if not details:
        return False
    errors = details.get("writeErrors")
    if errors:
        details = errors[0]
        if details.get("code") != DUPLICATE_KEY:
            return False
    pattern = details.get("keyPattern") or {}
    return "client_msg_id" in pattern or "idempotency" in str(details.get("errmsg", ""))


# -- rooms ---------------------------------------------------------------------------------------
async def insert_room(ctx: Ctx, room: RoomRecord) -> None:
    await _coll(ctx, ROOMS).insert_one(room.to_doc(), session=ctx.session)


async def get_room(ctx: Ctx, room_id: str) -> RoomRecord | None:
    doc = await _coll(ctx, ROOMS).find_one({"_id": room_id}, session=ctx.session)
    return RoomRecord.from_doc(doc) if doc else None


async def rooms_by_ids(ctx: Ctx, room_ids: Sequence[str]) -> list[RoomRecord]:
    if not room_ids:
        return []
    cursor = _coll(ctx, ROOMS).find({"_id": {"$in": list(room_ids)}}, session=ctx.session)
    return [RoomRecord.from_doc(doc) async for doc in cursor]


async def next_seqs(
    ctx: Ctx, room_id: str, count: int, last_message_id: str, at: datetime
) -> RoomRecord | None:
    """Take the room's next `count` seqs (the room as it is after: they end at its last_seq),
    or None when there is no room."""
    doc = await _coll(ctx, ROOMS).find_one_and_update(
        {"_id": room_id},
        {
            "$inc": {"last_seq": count},
            "$set": {"last_message_id": last_message_id, "last_activity_at": at},
        },
        return_document=ReturnDocument.AFTER,
        session=ctx.session,
    )
    return RoomRecord.from_doc(doc) if doc else None


async def add_member_count(ctx: Ctx, room_id: str, delta: int) -> RoomRecord | None:
    doc = await _coll(ctx, ROOMS).find_one_and_update(
        {"_id": room_id},
        {"$inc": {"member_count": delta}},
        return_document=ReturnDocument.AFTER,
        session=ctx.session,
    )
    return RoomRecord.from_doc(doc) if doc else None


async def set_owner(ctx: Ctx, room_id: str, owner_id: str) -> None:
    await _coll(ctx, ROOMS).update_one(
        {"_id": room_id}, {"$set": {"owner_id": owner_id}}, session=ctx.session
    )


# -- members -------------------------------------------------------------------------------------
async def get_member(ctx: Ctx, room_id: str, user_id: str) -> MemberRecord | None:
    doc = await _coll(ctx, MEMBERS).find_one(
        {"room_id": room_id, "user_id": user_id}, session=ctx.session
    )
    return MemberRecord.from_doc(doc) if doc else None


async def insert_members(ctx: Ctx, members: Sequence[MemberRecord]) -> None:
    if members:
        await _coll(ctx, MEMBERS).insert_many(
            [member.to_doc() for member in members], ordered=True, session=ctx.session
        )


async def delete_member(ctx: Ctx, room_id: str, user_id: str) -> bool:
    result = await _coll(ctx, MEMBERS).delete_one(
        {"room_id": room_id, "user_id": user_id}, session=ctx.session
    )
    return result.deleted_count == 1


async def set_role(ctx: Ctx, room_id: str, user_id: str, role: Role) -> None:
    await _coll(ctx, MEMBERS).update_one(
        {"room_id": room_id, "user_id": user_id},
        {"$set": {"role": role.value}},
        session=ctx.session,
    )


async def successor(ctx: Ctx, room_id: str) -> MemberRecord | None:
    """Who inherits a room whose owner left: the longest-standing admin, else member."""
    for roles in ([Role.ADMIN.value], [Role.MEMBER.value]):
        cursor = (
            _coll(ctx, MEMBERS)
            .find({"room_id": room_id, "role": {"$in": roles}}, session=ctx.session)
            .sort([("joined_at", ASCENDING), ("user_id", ASCENDING)])
            .limit(1)
        )
        async for doc in cursor:
            return MemberRecord.from_doc(doc)
    return None


async def mark_read_upto_many(ctx: Ctx, upto: Mapping[tuple[str, str], int]) -> int:
    """Move each (room, member)'s last read seq up to its seq (never down), in one round trip;
    the number of members found (fewer than asked: some users are not members). Updates, not
    find-and-modify: on the local MongoDB they cost half as much."""
    members = _coll(ctx, MEMBERS)
    if len(upto) == 1:
        [((room_id, user_id), seq)] = upto.items()
        result = await members.update_one(
            {"room_id": room_id, "user_id": user_id},
            {"$max": {"last_read_seq": seq}},
            session=ctx.session,
        )
        return int(result.matched_count)
    bulk = await members.bulk_write(
        [
            UpdateOne({"room_id": room_id, "user_id": user_id}, {"$max": {"last_read_seq": seq}})
            for (room_id, user_id), seq in upto.items()
        ],
        ordered=False,
        session=ctx.session,
    )
    return int(bulk.matched_count)


async def members_among(ctx: Ctx, room_id: str, user_ids: Sequence[str]) -> set[str]:
    cursor = _coll(ctx, MEMBERS).find(
        {"room_id": room_id, "user_id": {"$in": list(user_ids)}},
        {"user_id": 1, "_id": 0},
        session=ctx.session,
    )
    return {doc["user_id"] async for doc in cursor}


async def advance_read(ctx: Ctx, room_id: str, user_id: str, seq: int) -> MemberRecord | None:
    """Move the member's last read seq up to `seq` (never down); the member as it was before,
    or None when `user_id` is not a member."""
    doc = await _coll(ctx, MEMBERS).find_one_and_update(
        {"room_id": room_id, "user_id": user_id},
        {"$max": {"last_read_seq": seq}},
        return_document=ReturnDocument.BEFORE,
        session=ctx.session,
    )
    return MemberRecord.from_doc(doc) if doc else None


async def list_members(
    ctx: Ctx, room_id: str, *, after_user_id: str, limit: int
) -> list[MemberRecord]:
    query: Doc = {"room_id": room_id}
    if after_user_id:
        query["user_id"] = {"$gt": after_user_id}
    cursor = (
        _coll(ctx, MEMBERS)
        .find(query, session=ctx.session)
        .sort([("room_id", ASCENDING), ("user_id", ASCENDING)])
        .limit(limit)
    )
    return [MemberRecord.from_doc(doc) async for doc in cursor]


async def memberships_of(ctx: Ctx, user_id: str, *, limit: int) -> list[MemberRecord]:
    cursor = _coll(ctx, MEMBERS).find({"user_id": user_id}, session=ctx.session).limit(limit)
    return [MemberRecord.from_doc(doc) async for doc in cursor]


async def member_of(ctx: Ctx, user_id: str, room_ids: Sequence[str]) -> set[str]:
    """Which of `room_ids` the user is a member of."""
    if not room_ids:
        return set()
    cursor = _coll(ctx, MEMBERS).find(
        {"user_id": user_id, "room_id": {"$in": list(room_ids)}},
        {"room_id": 1, "_id": 0},
        session=ctx.session,
    )
    return {doc["room_id"] async for doc in cursor}


# -- invites -------------------------------------------------------------------------------------
def _invite_id(room_id: str, user_id: str) -> str:
    return f"{room_id}:{user_id}"


async def put_invite(ctx: Ctx, room_id: str, user_id: str, by: str, at: datetime) -> None:
    await _coll(ctx, INVITES).update_one(
        {"_id": _invite_id(room_id, user_id)},
        {
            "$set": {"invited_by": by},
            "$setOnInsert": {"room_id": room_id, "user_id": user_id, "created_at": at},
        },
        upsert=True,
        session=ctx.session,
    )


async def put_invites(
    ctx: Ctx, room_id: str, user_ids: Sequence[str], by: str, at: datetime
) -> None:
    if user_ids:
        await _coll(ctx, INVITES).insert_many(
            [
                {
                    "_id": _invite_id(room_id, user_id),
                    "room_id": room_id,
                    "user_id": user_id,
                    "invited_by": by,
                    "created_at": at,
                }
                for user_id in user_ids
            ],
            session=ctx.session,
        )


async def take_invite(ctx: Ctx, room_id: str, user_id: str) -> bool:
    """Spend the user's invitation to the room; False when there was none."""
    result = await _coll(ctx, INVITES).delete_one(
        {"_id": _invite_id(room_id, user_id)}, session=ctx.session
    )
    return result.deleted_count == 1


async def delete_invites_of(ctx: Ctx, user_id: str) -> int:
    result = await _coll(ctx, INVITES).delete_many({"user_id": user_id}, session=ctx.session)
    return int(result.deleted_count)


# -- messages ------------------------------------------------------------------------------------
async def insert_messages(ctx: Ctx, messages: Sequence[MessageRecord]) -> None:
    if len(messages) == 1:
        await _coll(ctx, MESSAGES).insert_one(messages[0].to_doc(), session=ctx.session)
    else:
        await _coll(ctx, MESSAGES).insert_many(
            [message.to_doc() for message in messages], ordered=True, session=ctx.session
        )


async def get_message(ctx: Ctx, room_id: str, seq: int) -> MessageRecord | None:
    doc = await _coll(ctx, MESSAGES).find_one({"room_id": room_id, "seq": seq}, session=ctx.session)
    return MessageRecord.from_doc(doc) if doc else None


async def sent_messages(
    ctx: Ctx, room_id: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], MessageRecord]:
    """The stored messages among these (sender_id, client_msg_id) keys of the room."""
    senders = sorted({sender for sender, _ in keys})
    client_ids = sorted({client_msg_id for _, client_msg_id in keys})
    cursor = _coll(ctx, MESSAGES).find(
        {"room_id": room_id, "sender_id": {"$in": senders}, "client_msg_id": {"$in": client_ids}},
        session=ctx.session,
    )
    wanted = set(keys)
    found: dict[tuple[str, str], MessageRecord] = {}
    async for doc in cursor:
        message = MessageRecord.from_doc(doc)
        if (key := (message.sender_id, message.client_msg_id)) in wanted:
            found[key] = message
    return found


async def messages_by_ids(ctx: Ctx, message_ids: Sequence[str]) -> list[MessageRecord]:
    if not message_ids:
        return []
    cursor = _coll(ctx, MESSAGES).find({"_id": {"$in": list(message_ids)}}, session=ctx.session)
    return [MessageRecord.from_doc(doc) async for doc in cursor]


async def messages_between(ctx: Ctx, room_id: str, first: int, last: int) -> list[MessageRecord]:
    """Messages with first <= seq <= last, ascending (both bounds: see the module docstring)."""
    if last < first:
        return []
    cursor = (
        _coll(ctx, MESSAGES)
        .find({"room_id": room_id, "seq": {"$gte": first, "$lte": last}}, session=ctx.session)
        .sort([("room_id", ASCENDING), ("seq", ASCENDING)])
    )
    return [MessageRecord.from_doc(doc) async for doc in cursor]


async def edit_own_message(
    ctx: Ctx, room_id: str, seq: int, sender_id: str, content: str, at: datetime
) -> MessageRecord | None:
    """Replace the content of the sender's live message; None when it is not that."""
    doc = await _coll(ctx, MESSAGES).find_one_and_update(
        {"room_id": room_id, "seq": seq, "sender_id": sender_id, "deleted": False},
        {"$set": {"content": content, "edited_at": at}},
        return_document=ReturnDocument.AFTER,
        session=ctx.session,
    )
    return MessageRecord.from_doc(doc) if doc else None


async def mark_deleted(
    ctx: Ctx, room_id: str, seq: int, by: str, at: datetime
) -> MessageRecord | None:
    """Tombstone a live message (content and mentions removed, seq kept)."""
    doc = await _coll(ctx, MESSAGES).find_one_and_update(
        {"room_id": room_id, "seq": seq, "deleted": False},
        {
            "$set": {
                "content": "",
                "mentions": [],
                "deleted": True,
                "deleted_by": by,
                "deleted_at": at,
            }
        },
        return_document=ReturnDocument.AFTER,
        session=ctx.session,
    )
    return MessageRecord.from_doc(doc) if doc else None


async def rooms_with_messages_of(ctx: Ctx, sender_id: str) -> list[str]:
    values = await _coll(ctx, MESSAGES).distinct(
        "room_id", {"sender_id": sender_id}, session=ctx.session
    )
    return [str(value) for value in values]


async def erase_messages_of(ctx: Ctx, sender_id: str, at: datetime) -> int:
    """Tombstone every message the user sent (content and mentions removed)."""
    result = await _coll(ctx, MESSAGES).update_many(
        # Deleted messages have no content left already.
        {"sender_id": sender_id, "deleted": False},
        {
            "$set": {
                "content": "",
                "mentions": [],
                "deleted": True,
                "deleted_by": sender_id,
                "deleted_at": at,
            }
        },
        session=ctx.session,
    )
    return int(result.modified_count)


# -- the GDPR export (export.py): a user's records, streamed in batches -------------------------
EXPORT_BATCH = 500


async def iter_memberships_of(ctx: Ctx, user_id: str) -> AsyncIterator[MemberRecord]:
    cursor = _coll(ctx, MEMBERS).find({"user_id": user_id}, session=ctx.session)
    async for doc in cursor.batch_size(EXPORT_BATCH):
        yield MemberRecord.from_doc(doc)


async def iter_invites_to(ctx: Ctx, user_id: str) -> AsyncIterator[Doc]:
    cursor = _coll(ctx, INVITES).find({"user_id": user_id}, session=ctx.session)
    async for doc in cursor.batch_size(EXPORT_BATCH):
        yield doc


async def iter_messages_of(ctx: Ctx, sender_id: str) -> AsyncIterator[MessageRecord]:
    """Every message the user sent, tombstones included, in no order (the `sender` index; a
    sort would make the local server read them all first anyway)."""
    cursor = _coll(ctx, MESSAGES).find({"sender_id": sender_id}, session=ctx.session)
    async for doc in cursor.batch_size(EXPORT_BATCH):
        yield MessageRecord.from_doc(doc)


# -- retention (archive.py) ------------------------------------------------------------------------
async def first_message_id(ctx: Ctx, low: str, high: str) -> str | None:
    """The smallest message id in [low, high): where the next day with messages starts."""
    doc = await _coll(ctx, MESSAGES).find_one(
        {"_id": {"$gte": low, "$lt": high}},
        projection={"_id": 1},
        sort=[("_id", ASCENDING)],
        session=ctx.session,
    )
    return str(doc["_id"]) if doc else None


async def messages_in_id_range(ctx: Ctx, low: str, high: str) -> list[MessageRecord]:
    """Every message whose id is in [low, high) (one UTC day of every room), by id."""
    cursor = (
        _coll(ctx, MESSAGES)
        .find({"_id": {"$gte": low, "$lt": high}}, session=ctx.session)
        .sort([("_id", ASCENDING)])
    )
    return [MessageRecord.from_doc(doc) async for doc in cursor]


async def delete_unchanged(ctx: Ctx, messages: Sequence[MessageRecord]) -> int:
    """Delete these messages as they were read: one edited or tombstoned meanwhile stays (its
    archived copy is stale; the next run archives it again)."""
    if not messages:
        return 0
    result = await _coll(ctx, MESSAGES).bulk_write(
        [
            DeleteOne({"_id": m.id, "edited_at": m.edited_at, "deleted": m.deleted})
            for m in messages
        ],
        ordered=False,
        session=ctx.session,
    )
    return int(result.deleted_count)
