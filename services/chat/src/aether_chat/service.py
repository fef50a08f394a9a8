"""The chat service's business rules. Transport-free: writes get the boundary's unit of work (the
open transaction); reads go to the database directly (no transaction) and through the caches.

Rules worth knowing (docs/chat.md "The chat service" has the full list):
- only members read or write a room; the owner and room admins moderate it, and so does a caller
  holding the platform permission `chat:moderate`;
- a message takes the room's next seq inside the transaction that stores it and its outbox
  event, so seqs are 1, 2, 3... with no gaps; a retry with the same client_msg_id returns the
  stored message (created=False);
- sending marks the room read up to the sender's own message; unread = last_seq - last_read_seq;
- the history, edits and deletes keep every seq: a deleted message is a tombstone (no content).

It takes and returns plain records; protobuf is read and built at the edge (grpc.py, schemas.py,
events.py). One exception: the two cached reads (the latest history page, the conversation
list) hand the edge the cache's encoded answer as bytes: decoding it into records only to encode
them again would cost tens of times the one decode, a large share of a cached read's CPU.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pymongo.errors import BulkWriteError, DuplicateKeyError
from redis.exceptions import RedisError

from aether_chat import ids, repository, schemas, validation
from aether_chat.cache import ChatCache, RoomListEntry
from aether_chat.callers import Caller
from aether_chat.config import ChatSettings
from aether_chat.db import Database, UnitOfWork
from aether_chat.events import ChatEvents
from aether_chat.export import ChatExport
from aether_chat.realtime import Changes, Fanout
from aether_chat.repository import MemberRecord, MessageRecord, Role, RoomRecord, Visibility
from aether_common.data_export import collect
from aether_common.errors import AetherError, Conflict, Forbidden, NotFound, PreconditionFailed
from aether_common.logging import get_logger

log = get_logger(__name__)

NOT_A_MEMBER = "you are not a member of this room"
# Typing answers kept per process; the oldest half is dropped past this many.
MAX_TYPING_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class NewRoom:
    """A room as a caller asked for it (not validated yet; visibility None: not one we know)."""

    name: str
    description: str
    visibility: Visibility | None
    member_ids: Sequence[str]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A SendMessage as a caller sent it (not validated yet; "" and 0 mean "not given")."""

    room_id: str
    client_msg_id: str
    content: str
    mentions: Sequence[str]
    reply_to_seq: int


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A GetHistory as a caller sent it (not validated yet; 0 means "not given")."""

    room_id: str
    after_seq: int = 0
    before_seq: int = 0
    limit: int = 0


@dataclass(frozen=True, slots=True)
class Draft:
    """A validated SendMessage, waiting for its room's next transaction."""

    sender_id: str
    room_id: str
    client_msg_id: str
    content: str
    mentions: tuple[str, ...]
    reply_to_seq: int


@dataclass(frozen=True, slots=True)
class Sent:
    message: MessageRecord
    created: bool


@dataclass(frozen=True, slots=True)
class ReadState:
    last_read_seq: int
    unread_count: int


@dataclass(frozen=True, slots=True)
class PresenceState:
    user_id: str
    online: bool
    last_seen_ms: int | None


@dataclass(frozen=True, slots=True)
class MemberPage:
    members: list[MemberRecord]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of a room's history as records: any page but the latest, and the latest while
    Redis is away (the cached latest page stays encoded: `ChatService.history`)."""

    messages: list[MessageRecord]
    has_more: bool
    last_seq: int


@dataclass(frozen=True, slots=True)
class RoomsPage:
    """A page of the caller's conversation list: `listing` holds every room of the caller, as
    the cache keeps it (schemas.room_list_payload); the page is its rooms [start:stop]."""

    listing: bytes
    start: int
    stop: int
    next_page_token: str


class ChatService:
    def __init__(
        self,
        *,
        settings: ChatSettings,
        database: Database,
        cache: ChatCache,
        fanout: Fanout,
        events: ChatEvents,
    ) -> None:
        self.settings = settings
        self._reader = database.reader
        self._cache = cache
        self._fanout = fanout
        self._events = events
        # (room_id, user_id) -> monotonic expiry: membership answers for typing only.
        self._typing_members: dict[tuple[str, str], float] = {}

    # == rooms ====================================================================================
    async def create_room(self, uow: UnitOfWork, caller: Caller, new: NewRoom) -> RoomRecord:
        s = self.settings
        name = validation.text(new.name, "name", max_chars=s.max_room_name_chars, required=True)
        description = validation.text(
            new.description,
            "description",
            max_chars=s.max_room_description_chars,
            required=False,
        )
        visibility = new.visibility
        if visibility is None:
            raise validation.fail(
                "visibility", "visibility must be ROOM_VISIBILITY_PUBLIC or ROOM_VISIBILITY_PRIVATE"
            )
        others = [
            user_id
            for user_id in validation.user_ids(new.member_ids, "member_ids", s.max_initial_members)
            if user_id != caller.user_id
        ]
        at = ids.now()
        public = visibility is Visibility.PUBLIC
        room = RoomRecord(
            id=ids.new_id(),
            name=name,
            description=description,
            visibility=visibility,
            owner_id=caller.user_id,
            created_at=at,
            last_seq=0,
            member_count=1 + (len(others) if public else 0),
            last_message_id=None,
            last_activity_at=at,
        )
        owner = MemberRecord(room.id, caller.user_id, Role.OWNER, at, 0)
        added = [MemberRecord(room.id, user_id, Role.MEMBER, at, 0) for user_id in others]
        await repository.insert_room(uow, room)
        await repository.insert_members(uow, [owner, *added] if public else [owner])
        if not public:
            await repository.put_invites(uow, room.id, others, caller.user_id, at)
        await uow.emit(
            self._events.room_created(room),
            self._events.member_joined(room.id, caller.user_id, Role.OWNER, "created"),
            *(
                self._events.member_joined(room.id, member.user_id, Role.MEMBER, "invited")
                for member in added
                if public
            ),
        )
        uow.changes.users.add(caller.user_id)
        if public:
            uow.changes.users.update(others)
        return room

    async def get_room(self, caller: Caller, room_id: str) -> RoomRecord:
        room_id = validation.room_id(room_id)
        if (room := await repository.get_room(self._reader, room_id)) is None:
            raise _room_not_found(room_id)
        if (
            room.visibility is Visibility.PRIVATE
            and not caller.moderator
            and await repository.get_member(self._reader, room_id, caller.user_id) is None
        ):
            raise Forbidden("this room is private: only its members see it")
        return room

    async def join_room(self, uow: UnitOfWork, caller: Caller, room_id: str) -> RoomRecord:
        room_id = validation.room_id(room_id)
        if (room := await repository.get_room(uow, room_id)) is None:
            raise _room_not_found(room_id)
        if await repository.get_member(uow, room_id, caller.user_id) is not None:
            return room  # already a member: nothing changes
        how = "joined"
        if room.visibility is Visibility.PRIVATE:
            if not await repository.take_invite(uow, room_id, caller.user_id):
                raise Forbidden("this room is private: you need an invitation to join it")
            how = "invited"
        member = MemberRecord(room_id, caller.user_id, Role.MEMBER, ids.now(), room.last_seq)
        try:
            await repository.insert_members(uow, [member])
        except DuplicateKeyError:  # a concurrent join of the same user won
            await uow.restart()
            return await repository.get_room(uow, room_id) or room
        room = await repository.add_member_count(uow, room_id, 1) or room
        await uow.emit(self._events.member_joined(room_id, caller.user_id, Role.MEMBER, how))
        uow.changes.publish(room_id, schemas.member_frame(room_id, caller.user_id, "joined"))
        uow.changes.rooms.add(room_id)
        uow.changes.users.add(caller.user_id)
        return room

    async def leave_room(self, uow: UnitOfWork, caller: Caller, room_id: str) -> None:
        room_id = validation.room_id(room_id)
        member = await repository.get_member(uow, room_id, caller.user_id)
        if member is None:
            if await repository.get_room(uow, room_id) is None:
                raise _room_not_found(room_id)
            return  # not a member (any more): leaving again is a no-op
        await self._drop_member(uow, member, how="left", by="", frame_event="left")

    async def invite_member(
        self, uow: UnitOfWork, caller: Caller, room_id: str, user_id: str
    ) -> None:
        room_id = validation.room_id(room_id)
        target = validation.user_id(user_id)
        if target == caller.user_id:
            raise validation.fail("user_id", "you cannot invite yourself")
        if (room := await repository.get_room(uow, room_id)) is None:
            raise _room_not_found(room_id)
        actor = await repository.get_member(uow, room_id, caller.user_id)
        if not caller.moderator:
            if actor is None:
                raise Forbidden(NOT_A_MEMBER)
            if room.visibility is Visibility.PRIVATE and not actor.role.moderates:
                raise Forbidden("only the owner or an admin can invite to a private room")
        if await repository.get_member(uow, room_id, target) is not None:
            return  # already a member
        at = ids.now()
        if room.visibility is Visibility.PRIVATE:
            # An invitation: the user becomes a member with JoinRoom.
            await repository.put_invite(uow, room_id, target, caller.user_id, at)
            return
        # Public room: the invited user is added at once (as at creation).
        try:
            await repository.insert_members(
                uow, [MemberRecord(room_id, target, Role.MEMBER, at, room.last_seq)]
            )
        except DuplicateKeyError:
            await uow.restart()
            return
        await repository.add_member_count(uow, room_id, 1)
        await uow.emit(self._events.member_joined(room_id, target, Role.MEMBER, "invited"))
        uow.changes.publish(room_id, schemas.member_frame(room_id, target, "joined"))
        uow.changes.rooms.add(room_id)
        uow.changes.users.add(target)

    async def remove_member(
        self, uow: UnitOfWork, caller: Caller, room_id: str, user_id: str
    ) -> None:
        room_id = validation.room_id(room_id)
        target = validation.user_id(user_id)
        if target == caller.user_id:
            raise validation.fail("user_id", "use LeaveRoom to leave a room")
        if await repository.get_room(uow, room_id) is None:
            raise _room_not_found(room_id)
        actor = await repository.get_member(uow, room_id, caller.user_id)
        if not caller.moderator:
            if actor is None:
                raise Forbidden(NOT_A_MEMBER)
            if not actor.role.moderates:
                raise Forbidden("only the owner or an admin can remove members")
        member = await repository.get_member(uow, room_id, target)
        if member is None:
            if await repository.take_invite(uow, room_id, target):
                return  # not a member yet: the invitation is withdrawn
            raise NotFound("that user is not a member of this room")
        if member.role is Role.OWNER:
            raise Forbidden("the owner of a room cannot be removed")
        owner_acting = actor is not None and actor.role is Role.OWNER
        if member.role is Role.ADMIN and not (caller.moderator or owner_acting):
            raise Forbidden("only the owner can remove an admin")
        await self._drop_member(
            uow, member, how="removed", by=caller.user_id, frame_event="removed"
        )

    async def list_members(
        self, caller: Caller, room_id: str, *, limit: int = 0, page_token: str = ""
    ) -> MemberPage:
        s = self.settings
        room_id = validation.room_id(room_id)
        limit = validation.limit(
            limit, default=s.members_default_limit, maximum=s.members_max_limit
        )
        after = ""
        if page_token:
            token = validation.decode_token(page_token)
            if not isinstance(token, dict) or not isinstance(token.get("u"), str):
                raise validation.fail("page_token", "page_token is not valid")
            after = token["u"]
        await self._require_member(room_id, caller)
        members = await repository.list_members(
            self._reader, room_id, after_user_id=after, limit=limit + 1
        )
        token_out = ""
        if len(members) > limit:
            members = members[:limit]
            token_out = validation.encode_token({"u": members[-1].user_id})
        return MemberPage(members, token_out)

    async def check_membership(self, caller: Caller, room_ids: Sequence[str]) -> list[str]:
        room_ids = validation.room_ids(room_ids, "room_ids", self.settings.max_check_rooms)
        member_of = await repository.member_of(self._reader, caller.user_id, room_ids)
        return [room_id for room_id in room_ids if room_id in member_of]

    async def list_my_rooms(
        self, caller: Caller, *, limit: int = 0, page_token: str = ""
    ) -> RoomsPage:
        """A page of the caller's rooms, latest activity first. The listing stays encoded (the
        cache's bytes): the edge decodes it once, as the answer."""
        s = self.settings
        limit = validation.limit(limit, default=s.rooms_default_limit, maximum=s.rooms_max_limit)
        after: tuple[int, str] | None = None
        if page_token:
            token = validation.decode_token(page_token)
            valid = (
                isinstance(token, list)
                and len(token) == 2
                and isinstance(token[0], int)
                and isinstance(token[1], str)
            )
            if not valid:
                raise validation.fail("page_token", "page_token is not valid")
            after = (-token[0], token[1])
        lookup = await self._cache.room_list(caller.user_id)
        if isinstance(lookup.hit, RoomListEntry):
            entry = lookup.hit
        else:
            entry = await self._build_room_list(caller.user_id, lookup.version)
        order = [
            (-key, room_id) for key, room_id in zip(entry.sort_keys, entry.room_ids, strict=True)
        ]
        start = 0 if after is None else bisect.bisect_right(order, after)
        stop = min(start + limit, len(entry.room_ids))
        next_token = ""
        if start + limit < len(entry.room_ids):
            last = start + limit - 1
            next_token = validation.encode_token([entry.sort_keys[last], entry.room_ids[last]])
        return RoomsPage(entry.payload, start, stop, next_token)

    async def _build_room_list(self, user_id: str, version: bytes | None) -> RoomListEntry:
        members = await repository.memberships_of(
            self._reader, user_id, limit=self.settings.max_rooms_per_user
        )
        room_ids = [member.room_id for member in members]
        versions: dict[str, str] | None = None
        if version is not None:  # read before the rooms themselves (see cache.py)
            try:
                versions = dict(
                    zip(room_ids, await self._cache.room_versions(room_ids), strict=True)
                )
            except RedisError as exc:
                log.warning("room versions unreadable; list not cached", error=repr(exc))
        rooms = {room.id: room for room in await repository.rooms_by_ids(self._reader, room_ids)}
        last_ids = [room.last_message_id for room in rooms.values() if room.last_message_id]
        last = {m.id: m for m in await repository.messages_by_ids(self._reader, last_ids)}
        rows: list[tuple[int, str, schemas.RoomSummary]] = []
        for member in members:
            room = rooms.get(member.room_id)
            if room is None:
                continue
            summary = schemas.RoomSummary(
                room=room,
                unread_count=max(0, room.last_seq - member.last_read_seq),
                role=member.role,
                last_message=last.get(room.last_message_id or ""),
            )
            activity_ms = int(room.last_activity_at.timestamp() * 1000)
            rows.append((-activity_ms, room.id, summary))
        rows.sort(key=lambda row: (row[0], row[1]))
        entry = RoomListEntry(
            room_ids=[row[1] for row in rows],
            sort_keys=[-row[0] for row in rows],
            payload=schemas.room_list_payload([row[2] for row in rows]),
        )
        if version is not None and versions is not None:
            room_versions = [versions[room_id] for room_id in entry.room_ids]
            await self._cache.store_room_list(user_id, version, room_versions, entry)
        return entry

    # == messages =================================================================================
    def draft_message(self, caller: Caller, new: NewMessage) -> Draft:
        """A validated send, ready for `send_batch` (bad input fails here, alone)."""
        s = self.settings
        return Draft(
            sender_id=caller.user_id,
            room_id=validation.room_id(new.room_id),
            client_msg_id=validation.client_msg_id(new.client_msg_id),
            content=validation.content(new.content, s.max_message_chars),
            mentions=tuple(validation.user_ids(new.mentions, "mentions", s.max_mentions)),
            reply_to_seq=validation.cursor(new.reply_to_seq, "reply_to_seq"),
        )

    async def send_batch(
        self, uow: UnitOfWork, drafts: Sequence[Draft]
    ) -> list[Sent | AetherError]:
        """Store the drafts, of one room or several, in one transaction; one answer per draft.

        Each room's counter moves by the number stored there (seqs follow the drafts' order),
        every sender's read position moves to their own last message (that write is also the
        membership check), and the messages and their events go in with one insert each, for
        all rooms. A draft that cannot be stored (no such room, sender not a member,
        reply_to_seq not earlier, an earlier send with the same client_msg_id) gets its own
        answer and the others are stored again without it, so seqs never have gaps.
        """
        answers: dict[int, Sent | AetherError] = {}
        first_of: dict[tuple[str, str, str], int] = {}
        repeats: dict[int, int] = {}  # the same (room, sender, client_msg_id) twice in one batch
        for index, draft in enumerate(drafts):
            key = (draft.room_id, draft.sender_id, draft.client_msg_id)
            if key in first_of:
                repeats[index] = first_of[key]
            else:
                first_of[key] = index
        while live := [i for i in first_of.values() if i not in answers]:
            stored = await self._store(uow, [drafts[i] for i in live])
            if isinstance(stored, dict):  # some drafts cannot go in: answer them, go again
                answers.update({live[pos]: answer for pos, answer in stored.items()})
                await uow.restart()
                continue
            answers.update(zip(live, stored, strict=True))
            break
        for index, first in repeats.items():
            answer = answers[first]
            if isinstance(answer, Sent):  # the first one stored it: this one is its retry
                answer = Sent(answer.message, False)
            answers[index] = answer
        return [answers[index] for index in range(len(drafts))]

    async def _store(
        self, uow: UnitOfWork, drafts: list[Draft]
    ) -> list[Sent] | dict[int, Sent | AetherError]:
        """All drafts stored (their answers), or the answers of those that cannot be (by
        position; the transaction is then spoilt and must restart)."""
        at = ids.now()
        at_ms = int(at.timestamp() * 1000)
        message_ids = [ids.new_id(at_ms) for _ in drafts]
        by_room: dict[str, list[int]] = {}
        for pos, draft in enumerate(drafts):
            by_room.setdefault(draft.room_id, []).append(pos)
        # The seqs: each room's counter, in this transaction (a conflict re-runs it all).
        seqs: dict[int, int] = {}
        missing: dict[int, Sent | AetherError] = {}
        for room_id, positions in by_room.items():
            room = await repository.next_seqs(
                uow, room_id, len(positions), message_ids[positions[-1]], at
            )
            if room is None:
                missing.update({pos: _room_not_found(room_id) for pos in positions})
                continue
            first_seq = room.last_seq - len(positions) + 1
            seqs.update({pos: first_seq + n for n, pos in enumerate(positions)})
        if missing:
            return missing
        late = {
            pos: validation.fail(
                "reply_to_seq", "reply_to_seq must be the seq of an earlier message"
            )
            for pos, draft in enumerate(drafts)
            if draft.reply_to_seq >= seqs[pos]
        }
        if late:
            return dict(late)
        # Membership check and "senders have read their own messages" in one write.
        upto = {(draft.room_id, draft.sender_id): seqs[pos] for pos, draft in enumerate(drafts)}
        if await repository.mark_read_upto_many(uow, upto) < len(upto):
            refused: dict[int, Sent | AetherError] = {}
            for room_id, positions in by_room.items():
                senders = [drafts[pos].sender_id for pos in positions]
                members = await repository.members_among(uow, room_id, senders)
                refused.update(
                    {
                        pos: Forbidden(NOT_A_MEMBER)
                        for pos in positions
                        if drafts[pos].sender_id not in members
                    }
                )
            if not refused:  # pragma: no cover - the update and the read disagree
                raise Conflict("the room's members changed while sending; retry")
            return refused
        messages = [
            MessageRecord(
                id=message_ids[pos],
                room_id=draft.room_id,
                seq=seqs[pos],
                sender_id=draft.sender_id,
                client_msg_id=draft.client_msg_id,
                content=draft.content,
                mentions=draft.mentions,
                reply_to_seq=draft.reply_to_seq,
                created_at=at,
            )
            for pos, draft in enumerate(drafts)
        ]
        try:
            await repository.insert_messages(uow, messages)
        except (DuplicateKeyError, BulkWriteError) as exc:
            if not repository.is_idempotency_conflict(exc.details):
                raise
            # Retries of messages an earlier transaction stored: answer with those.
            await uow.restart()
            found: dict[int, Sent | AetherError] = {}
            for room_id, positions in by_room.items():
                keys = [(drafts[pos].sender_id, drafts[pos].client_msg_id) for pos in positions]
                earlier = await repository.sent_messages(uow, room_id, keys)
                found.update(
                    {
                        pos: Sent(earlier[key], False)
                        for pos, key in zip(positions, keys, strict=True)
                        if key in earlier
                    }
                )
            if not found:  # pragma: no cover - the unique index said one exists
                raise Conflict("a message with this client_msg_id is being stored; retry") from exc
            return found
        await uow.emit(*(self._events.message_created(message) for message in messages))
        for message in messages:
            uow.changes.publish(message.room_id, schemas.message_frame(message))
        uow.changes.rooms.update(by_room)
        return [Sent(message, True) for message in messages]

    async def edit_message(
        self, uow: UnitOfWork, caller: Caller, room_id: str, seq: int, content: str
    ) -> MessageRecord:
        room_id = validation.room_id(room_id)
        seq = validation.seq(seq)
        content = validation.content(content, self.settings.max_message_chars)
        await self._require_member(room_id, caller, ctx=uow)
        edited = await repository.edit_own_message(
            uow, room_id, seq, caller.user_id, content, ids.now()
        )
        if edited is None:
            current = await repository.get_message(uow, room_id, seq)
            if current is None:
                raise NotFound(f"there is no message {seq} in this room")
            if current.sender_id != caller.user_id:
                raise Forbidden("you can only edit your own messages")
            raise PreconditionFailed("this message was deleted; it cannot be edited")
        await uow.emit(self._events.message_edited(edited))
        uow.changes.publish(room_id, schemas.edit_frame(edited))
        uow.changes.rooms.add(room_id)
        return edited

    async def delete_message(self, uow: UnitOfWork, caller: Caller, room_id: str, seq: int) -> None:
        room_id = validation.room_id(room_id)
        seq = validation.seq(seq)
        member = await repository.get_member(uow, room_id, caller.user_id)
        if member is None and not caller.moderator:
            await self._refuse_non_member(room_id, uow)
        message = await repository.get_message(uow, room_id, seq)
        if message is None:
            if await repository.get_room(uow, room_id) is None:
                raise _room_not_found(room_id)
            raise NotFound(f"there is no message {seq} in this room")
        if message.deleted:
            return  # deleting twice changes nothing
        moderates = caller.moderator or (member is not None and member.role.moderates)
        if message.sender_id != caller.user_id and not moderates:
            raise Forbidden("you can only delete your own messages")
        deleted = await repository.mark_deleted(uow, room_id, seq, caller.user_id, ids.now())
        if deleted is None:
            return  # deleted meanwhile
        await uow.emit(
            self._events.message_deleted(
                room_id, seq, deleted.id, deleted.sender_id, caller.user_id
            )
        )
        uow.changes.publish(room_id, schemas.delete_frame(deleted, caller.user_id))
        uow.changes.rooms.add(room_id)

    async def history(self, caller: Caller, query: HistoryQuery) -> HistoryPage | bytes:
        """A page of the room's history; bytes when the answer goes through the cache (found
        there or stored there): the page as schemas.history_payload encoded it, which the edge
        decodes once instead of encoding the messages a second time."""
        s = self.settings
        room_id = validation.room_id(query.room_id)
        after = validation.cursor(query.after_seq, "after_seq")
        before = validation.cursor(query.before_seq, "before_seq")
        if after and before:
            raise validation.fail("before_seq", "give after_seq or before_seq, not both")
        limit = validation.limit(
            query.limit, default=s.history_default_limit, maximum=s.history_max_limit
        )
        latest = not after and not before
        version: bytes | None = None
        if latest:  # the cache's version is read before the data (see cache.py)
            lookup = await self._cache.history(room_id, limit)
            if isinstance(lookup.hit, bytes):
                await self._require_member(room_id, caller)
                return lookup.hit
            version = lookup.version
        member, room = await asyncio.gather(
            repository.get_member(self._reader, room_id, caller.user_id),
            repository.get_room(self._reader, room_id),
        )
        if room is None:
            raise _room_not_found(room_id)
        if member is None:
            raise Forbidden(NOT_A_MEMBER)
        if after:
            last = min(after + limit, room.last_seq)
            messages = await repository.messages_between(self._reader, room_id, after + 1, last)
            has_more = last < room.last_seq
        else:
            top = room.last_seq if latest else min(before - 1, room.last_seq)
            first = max(1, top - limit + 1)
            # One more, just below the page: is there anything older?
            messages = await repository.messages_between(
                self._reader, room_id, max(1, first - 1), top
            )
            has_more = bool(messages) and messages[0].seq < first
            if has_more:
                messages = messages[1:]
        if version is None:
            return HistoryPage(messages, has_more, room.last_seq)
        payload = schemas.history_payload(messages, has_more=has_more, last_seq=room.last_seq)
        await self._cache.store_history(room_id, limit, version, payload)
        return payload

    # == receipts, typing, presence ===============================================================
    async def mark_read(self, caller: Caller, room_id: str, seq: int) -> ReadState:
        room_id = validation.room_id(room_id)
        seq = validation.cursor(seq, "seq")
        if (room := await repository.get_room(self._reader, room_id)) is None:
            raise _room_not_found(room_id)
        if seq > room.last_seq:
            raise validation.fail(
                "seq", f"seq {seq} is past the room's last message ({room.last_seq})"
            )
        # One document, one write: no transaction needed. $max: never backwards.
        before = await repository.advance_read(self._reader, room_id, caller.user_id, seq)
        if before is None:
            raise Forbidden(NOT_A_MEMBER)
        last_read = max(before.last_read_seq, seq)
        if last_read > before.last_read_seq:
            changes = Changes()
            changes.publish(room_id, schemas.read_frame(room_id, caller.user_id, last_read))
            changes.users.add(caller.user_id)
            await self._fanout.apply(changes)
        return ReadState(last_read, max(0, room.last_seq - last_read))

    async def set_typing(self, caller: Caller, room_id: str, typing: bool) -> None:
        room_id = validation.room_id(room_id)
        key = (room_id, caller.user_id)
        now = time.monotonic()
        if self._typing_members.get(key, 0.0) < now:
            await self._require_member(room_id, caller)
            if len(self._typing_members) >= MAX_TYPING_ENTRIES:
                for stale in list(self._typing_members)[: MAX_TYPING_ENTRIES // 2]:
                    del self._typing_members[stale]
            self._typing_members[key] = now + self.settings.typing_membership_ttl_s
        frame = schemas.typing_frame(room_id, caller.user_id, typing)
        await self._fanout.publish([(room_id, frame)])

    async def update_presence(self, caller: Caller, online: bool) -> None:
        changed = await self._fanout.heartbeat(caller.user_id, online, self.settings.presence_ttl_s)
        if not changed:
            return  # a heartbeat that changes nothing publishes nothing
        members = await repository.memberships_of(
            self._reader, caller.user_id, limit=self.settings.max_rooms_per_user
        )
        await self._fanout.publish(
            [
                (m.room_id, schemas.presence_frame(m.room_id, caller.user_id, online))
                for m in members
            ]
        )

    async def get_presence(self, caller: Caller, room_id: str) -> list[PresenceState]:
        room_id = validation.room_id(room_id)
        await self._require_member(room_id, caller)
        members = await repository.list_members(
            self._reader, room_id, after_user_id="", limit=self.settings.max_presence_members
        )
        user_ids = [member.user_id for member in members]
        states = await self._fanout.presence(user_ids)
        return [
            PresenceState(user_id, online, seen)
            for user_id, (online, seen) in zip(user_ids, states, strict=True)
        ]

    # == the GDPR export ===========================================================================
    async def export_my_data(self, caller: Caller) -> ChatExport:
        """Everything chat holds about the caller (export.py), read in batches; refused with
        ExportTooLarge past the export limits rather than cut short."""
        user_id, limit = caller.user_id, self.settings.export_max_records
        memberships = await collect(
            repository.iter_memberships_of(self._reader, user_id), section="rooms", limit=limit
        )
        room_ids = [m.room_id for m in memberships]
        rooms: list[RoomRecord] = []
        for start in range(0, len(room_ids), repository.EXPORT_BATCH):
            batch = room_ids[start : start + repository.EXPORT_BATCH]
            rooms.extend(await repository.rooms_by_ids(self._reader, batch))
        invitations = await collect(
            repository.iter_invites_to(self._reader, user_id), section="invitations", limit=limit
        )
        messages = await collect(
            repository.iter_messages_of(self._reader, user_id), section="messages", limit=limit
        )
        [presence] = await self._fanout.presence([user_id])
        return ChatExport.of(
            user_id,
            memberships=memberships,
            rooms=rooms,
            invitations=invitations,
            messages=messages,
            presence=presence,
        )

    # == erasure (the user.deleted consumer) ====================================================
    async def erase_user(self, uow: UnitOfWork, user_id: str) -> int:
        """A deleted account: tombstone every message it sent (content and mentions removed;
        seqs kept so gateways see no gap), drop its memberships (ownership passes on) and its
        invitations. Returns the number of messages erased."""
        at = ids.now()
        rooms = await repository.rooms_with_messages_of(uow, user_id)
        erased = await repository.erase_messages_of(uow, user_id, at)
        for member in await repository.memberships_of(uow, user_id, limit=1_000_000):
            await self._drop_member(uow, member, how="user_deleted", by="", frame_event="left")
        await repository.delete_invites_of(uow, user_id)
        uow.changes.rooms.update(rooms)
        uow.changes.users.add(user_id)
        uow.changes.presence_gone.add(user_id)
        return erased

    # == helpers ==================================================================================
    async def _require_member(
        self, room_id: str, caller: Caller, *, ctx: repository.Ctx | None = None
    ) -> MemberRecord:
        ctx = ctx or self._reader
        member = await repository.get_member(ctx, room_id, caller.user_id)
        if member is None:
            await self._refuse_non_member(room_id, ctx)
        assert member is not None
        return member

    @staticmethod
    async def _refuse_non_member(room_id: str, ctx: repository.Ctx) -> None:
        """NOT_FOUND when the room does not exist, else PERMISSION_DENIED."""
        if await repository.get_room(ctx, room_id) is None:
            raise _room_not_found(room_id)
        raise Forbidden(NOT_A_MEMBER)

    async def _drop_member(
        self, uow: UnitOfWork, member: MemberRecord, *, how: str, by: str, frame_event: str
    ) -> None:
        room_id, user_id = member.room_id, member.user_id
        await repository.delete_member(uow, room_id, user_id)
        await repository.add_member_count(uow, room_id, -1)
        if member.role is Role.OWNER:
            heir = await repository.successor(uow, room_id)
            await repository.set_owner(uow, room_id, heir.user_id if heir else "")
            if heir is not None:
                await repository.set_role(uow, room_id, heir.user_id, Role.OWNER)
                uow.changes.users.add(heir.user_id)
        await uow.emit(self._events.member_left(room_id, user_id, how, by))
        # Gateways stop delivering the room to the user's connections on this frame.
        uow.changes.publish(room_id, schemas.member_frame(room_id, user_id, frame_event))
        uow.changes.rooms.add(room_id)
        uow.changes.users.add(user_id)
        self._typing_members.pop((room_id, user_id), None)


def _room_not_found(room_id: str) -> NotFound:
    return NotFound(f"room {room_id} not found")
