"""Redis caches of the two hot reads: the conversation list (ListMyRooms) and the latest history
page of a room, each kept `cache_ttl_s` (5 minutes) and invalidated by versions, not deletes.

Every change bumps a version after its commit: `<prefix>ver:room:<id>` (messages, edits,
deletes, membership, retention) and `<prefix>ver:user:<id>` (the user's own memberships and
read receipts). A cache entry records the versions it was built from, read BEFORE its data was
read; it is served only while they are still current. So a write that commits while an entry is
being built makes that entry stale-on-arrival instead of wrong for five minutes, and one change
costs one INCR however many members' lists it touches. Version keys outlive every entry built
on them (2 x TTL, refreshed on each bump), so a missing version ("0") never matches an old one.

Redis trouble never fails a read: the lookup counts an error and the caller reads MongoDB.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from aether_chat.metrics import CACHE_LOOKUPS
from aether_common.logging import get_logger

log = get_logger(__name__)

NO_VERSION = b"0"


@dataclass(frozen=True, slots=True)
class RoomListEntry:
    """The cached list of a user's rooms: ids with their sort keys, and the encoded answer."""

    room_ids: list[str]
    sort_keys: list[int]  # last activity, ms since the epoch (descending order)
    payload: bytes  # schemas.room_list_payload: a ListMyRoomsResponse holding every room


@dataclass(frozen=True, slots=True)
class Lookup:
    """A cache lookup: the entry when it was fresh, else the versions a refill must carry
    (None when Redis failed: then nothing is stored)."""

    hit: bytes | RoomListEntry | None
    version: bytes | None


class ChatCache:
    def __init__(self, redis: Redis, *, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.version_ttl_s = 2 * ttl_s + 60

    # -- keys ----------------------------------------------------------------------------------
    def room_version_key(self, room_id: str) -> str:
        return f"{self.prefix}ver:room:{room_id}"

    def user_version_key(self, user_id: str) -> str:
        return f"{self.prefix}ver:user:{user_id}"

    def _history_key(self, room_id: str, limit: int) -> str:
        return f"{self.prefix}cache:history:{room_id}:{limit}"

    def _rooms_key(self, user_id: str) -> str:
        return f"{self.prefix}cache:rooms:{user_id}"

    # -- invalidation --------------------------------------------------------------------------
    def queue_bumps(
        self, pipe: Pipeline, *, rooms: Iterable[str] = (), users: Iterable[str] = ()
    ) -> None:
        keys = [self.room_version_key(r) for r in rooms] + [self.user_version_key(u) for u in users]
        for key in keys:
            pipe.incr(key)
            pipe.expire(key, self.version_ttl_s)

    async def bump(self, *, rooms: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        pipe = self._redis.pipeline(transaction=False)
        self.queue_bumps(pipe, rooms=rooms, users=users)
        await pipe.execute()

    # -- latest history page -------------------------------------------------------------------
    async def history(self, room_id: str, limit: int) -> Lookup:
        try:
            cached, current = map(
                _bytes,
                await self._redis.mget(
                    [self._history_key(room_id, limit), self.room_version_key(room_id)]
                ),
            )
        except RedisError as exc:
            return _error("history", exc)
        version = current or NO_VERSION
        if cached is not None:
            tag, _, payload = cached.partition(b"|")
            if tag == version:
                CACHE_LOOKUPS.labels("history", "hit").inc()
                return Lookup(payload, version)
        CACHE_LOOKUPS.labels("history", "miss").inc()
        return Lookup(None, version)

    async def store_history(self, room_id: str, limit: int, version: bytes, payload: bytes) -> None:
        try:
            await self._redis.set(
                self._history_key(room_id, limit), version + b"|" + payload, ex=self.ttl_s
            )
        except RedisError as exc:
            log.warning("history cache store failed", error=repr(exc))

    # -- the conversation list -----------------------------------------------------------------
    async def room_list(self, user_id: str) -> Lookup:
        try:
            cached, current = map(
                _bytes,
                await self._redis.mget([self._rooms_key(user_id), self.user_version_key(user_id)]),
            )
            version = current or NO_VERSION
            entry = await self._fresh_room_list(cached, version)
        except RedisError as exc:
            return _error("rooms", exc)
        CACHE_LOOKUPS.labels("rooms", "hit" if entry is not None else "miss").inc()
        return Lookup(entry, version)

    async def _fresh_room_list(self, cached: bytes | None, version: bytes) -> RoomListEntry | None:
        if cached is None:
            return None
        header_bytes, _, payload = cached.partition(b"\n")
        try:
            header: dict[str, Any] = orjson.loads(header_bytes)
        except orjson.JSONDecodeError:
            return None
        if header.get("uv") != version.decode():
            return None
        room_ids: list[str] = header["ids"]
        if room_ids and await self.room_versions(room_ids) != header["rv"]:
            return None
        return RoomListEntry(room_ids, header["keys"], payload)

    async def room_versions(self, room_ids: Sequence[str]) -> list[str]:
        """Current versions of these rooms (raises RedisError: callers decide)."""
        if not room_ids:
            return []
        values = await self._redis.mget([self.room_version_key(r) for r in room_ids])
        return [(_bytes(value) or NO_VERSION).decode() for value in values]

    async def store_room_list(
        self, user_id: str, version: bytes, room_versions: list[str], entry: RoomListEntry
    ) -> None:
        header = orjson.dumps(
            {
                "uv": version.decode(),
                "ids": entry.room_ids,
                "rv": room_versions,
                "keys": entry.sort_keys,
            }
        )
        try:
            await self._redis.set(
                self._rooms_key(user_id), header + b"\n" + entry.payload, ex=self.ttl_s
            )
        except RedisError as exc:
            log.warning("room list cache store failed", error=repr(exc))


def _bytes(value: bytes | str | None) -> bytes | None:
    """The client returns bytes (decode_responses=False); its types also allow str."""
    return value.encode() if isinstance(value, str) else value


def _error(cache: str, exc: RedisError) -> Lookup:
    CACHE_LOOKUPS.labels(cache, "error").inc()
    log.warning("cache lookup failed; reading the database", cache=cache, error=repr(exc))
    return Lookup(None, None)
