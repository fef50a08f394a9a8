"""Redis: the fan-out channels (docs/chat.md), presence with a TTL, and the post-commit step.

- Fan-out: each frame is PUBLISHed on `<fanout_prefix>room:<room_id>` as the JSON bytes built
  once. Pub/sub is at-most-once and the state is committed before: a failed publish is logged
  and counted, never raised (gateways fill gaps from GetHistory by seq).
- After a commit, one pipelined round trip publishes the unit of work's frames and bumps the
  version of each changed room and user, which is what invalidates the caches (cache.py).
- Presence: `<prefix>presence:<user>` (ms of the last heartbeat) lives `presence_ttl_s` past
  the gateway's last heartbeat; `<prefix>seen:<user>` keeps the last-seen time for 30 days.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aether_chat.cache import ChatCache
from aether_chat.metrics import FANOUT_FAILURES, FANOUT_PUBLISHED
from aether_chat.schemas import Frame
from aether_common.logging import get_logger

log = get_logger(__name__)

SEEN_TTL_S = 30 * 24 * 3600


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


class Fanout:
    def __init__(self, redis: Redis, cache: ChatCache, *, fanout_prefix: str) -> None:
        self._redis = redis
        self._cache = cache
        self.prefix = fanout_prefix

    def channel(self, room_id: str) -> str:
        return f"{self.prefix}room:{room_id}"

    async def apply(self, changes: Changes) -> None:
        """After a commit: publish the frames and bump cache versions, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for room_id, _, frame in changes.frames:
            pipe.publish(self.channel(room_id), frame)
        self._cache.queue_bumps(pipe, rooms=changes.rooms, users=changes.users)
        for user_id in changes.presence_gone:
            pipe.delete(*self._presence_keys(user_id))
        try:
            await pipe.execute()
        except RedisError as exc:
            FANOUT_FAILURES.inc()
            log.warning(
                "fan-out after commit failed; gateways fill gaps from history",
                frames=len(changes.frames),
                error=repr(exc),
            )
            return
        for _, kind, _ in changes.frames:
            FANOUT_PUBLISHED.labels(kind).inc()

    async def publish(self, frames: Sequence[tuple[str, Frame]]) -> None:
        """Publish ephemeral frames (typing, presence) at once; best effort like the rest."""
        if not frames:
            return
        pipe = self._redis.pipeline(transaction=False)
        for room_id, frame in frames:
            pipe.publish(self.channel(room_id), orjson.dumps(frame))
        try:
            await pipe.execute()
        except RedisError as exc:
            FANOUT_FAILURES.inc()
            log.warning("fan-out of ephemeral frames failed", error=repr(exc))
            return
        FANOUT_PUBLISHED.labels(frames[0][1]["type"]).inc(len(frames))

    # -- presence ------------------------------------------------------------------------------
    def _presence_keys(self, user_id: str) -> tuple[str, str]:
        prefix = self._cache.prefix
        return f"{prefix}presence:{user_id}", f"{prefix}seen:{user_id}"

    async def heartbeat(self, user_id: str, online: bool, ttl_s: int) -> bool:
        """Record the gateway's heartbeat; True when the user's presence changed by it."""
        now_ms = str(time.time_ns() // 1_000_000)
        presence, seen = self._presence_keys(user_id)
        pipe = self._redis.pipeline(transaction=False)
        if online:
            pipe.set(presence, now_ms, ex=ttl_s, get=True)
        else:
            pipe.delete(presence)
        pipe.set(seen, now_ms, ex=SEEN_TTL_S)
        previous, _ = await pipe.execute()
        return previous is None if online else bool(previous)

    async def presence(self, user_ids: Sequence[str]) -> list[tuple[bool, int | None]]:
        """(online, last seen in ms) per user, in order; one round trip."""
        if not user_ids:
            return []
        keys = [key for user_id in user_ids for key in self._presence_keys(user_id)]
        values = await self._redis.mget(keys)
        result: list[tuple[bool, int | None]] = []
        for index in range(0, len(values), 2):
            heartbeat, seen = values[index], values[index + 1]
            last = heartbeat or seen
            result.append((heartbeat is not None, int(last) if last is not None else None))
        return result
