"""The response cache: L1 in this process (LRU, bounded by entries AND bytes, TTL) in front of
L2 in Redis (shared by every replica, same TTL).

Key = sha256 of (model id, mode, the mode's prompt settings, the normalised prompt, a hash of
the context the prompt carried: RAG snippets (ids + text), analysis data, conversation history),
plus the user id whenever the prompt holds personal context (history or the "memories"
namespace), so such answers are never shared across users. Keys are `<mode>:<sha256>`; in Redis
`<prefix><mode>:<sha256>`, so one mode's entries can be found by SCAN.

InvalidateCache deletes the L2 keys (one mode's or all) and publishes on
`<prefix>invalidate`; every replica's `InvalidationListener` then clears its L1 the same way.
A Redis failure is a miss (logged and counted), never a failed answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aether_ai.metrics import CACHE_EVICTIONS, CACHE_L1_BYTES, CACHE_L1_ENTRIES, CACHE_LOOKUPS
from aether_common.errors import Unavailable
from aether_common.logging import get_logger

log = get_logger(__name__)

ALL_MODES = "*"
# What an L1 entry costs besides its value: the key, the OrderedDict node, the tuple.
ENTRY_OVERHEAD_BYTES = 200
DELETE_BATCH = 500


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    answer: str
    model: str
    prompt_tokens: int
    completion_tokens: int

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "answer": self.answer,
                "model": self.model,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> CachedAnswer:
        data = orjson.loads(raw)
        return cls(
            str(data["answer"]),
            str(data["model"]),
            int(data["prompt_tokens"]),
            int(data["completion_tokens"]),
        )


def _load(raw: bytes) -> CachedAnswer | None:
    """An entry this version cannot read (another shape, corrupt) is a miss, not an error."""
    try:
        return CachedAnswer.loads(raw)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("unreadable response cache entry; treated as a miss", error=repr(exc))
        return None


def normalise_prompt(prompt: str) -> str:
    """Trimmed, runs of whitespace collapsed to one space, lower case."""
    return " ".join(prompt.split()).lower()


def context_hash(parts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        encoded = part.encode()
        # Length-prefixed: ("ab", "c") and ("a", "bc") must not collide.
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()


def cache_key(
    *,
    mode: str,
    model_id: str,
    settings: str,
    prompt: str,
    context: str,
    user_id: str | None,
) -> str:
    """`<mode>:<sha256>`; `user_id` only when the prompt holds personal context."""
    digest = context_hash(
        [model_id, mode, settings, normalise_prompt(prompt), context, user_id or ""]
    )
    return f"{mode}:{digest}"


class BoundedLru:
    """LRU with a TTL, bounded by entry count and by bytes (both enforced on every put)."""

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        # key -> (expires_at, size, value)
        self._entries: OrderedDict[str, tuple[float, int, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, _, value = entry
        if expires_at <= self._clock():
            self._drop(key, "expired")
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: bytes) -> None:
        size = len(key) + len(value) + ENTRY_OVERHEAD_BYTES
        if key in self._entries:
            self._drop(key, None)
        if size > self.max_bytes:
            return  # would evict everything and still not fit
        self._entries[key] = (self._clock() + self.ttl_s, size, value)
        self.bytes += size
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)), "entries")
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)), "bytes")
        self._report()

    def clear(self, mode: str = ALL_MODES) -> int:
        """Drop every entry, or those of one mode (keys start with `<mode>:`)."""
        if mode == ALL_MODES:
            keys = list(self._entries)
        else:
            keys = [key for key in self._entries if key.startswith(f"{mode}:")]
        for key in keys:
            self._drop(key, "invalidated")
        return len(keys)

    def _drop(self, key: str, reason: str | None) -> None:
        _, size, _ = self._entries.pop(key)
        self.bytes -= size
        if reason is not None:
            CACHE_EVICTIONS.labels(reason).inc()
        self._report()

    def _report(self) -> None:
        CACHE_L1_ENTRIES.set(len(self._entries))
        CACHE_L1_BYTES.set(self.bytes)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class ResponseCache:
    def __init__(self, redis: Redis, l1: BoundedLru, *, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self.l1 = l1
        self.prefix = prefix
        self.ttl_s = ttl_s

    @property
    def channel(self) -> str:
        return f"{self.prefix}invalidate"

    async def get(self, key: str) -> CachedAnswer | None:
        raw = self.l1.get(key)
        if raw is not None:
            CACHE_LOOKUPS.labels("l1", "hit").inc()
            return _load(raw)
        CACHE_LOOKUPS.labels("l1", "miss").inc()
        try:
            # The client is built with decode_responses=False: bytes or None.
            shared = cast(bytes | None, await self._redis.get(self.prefix + key))
        except RedisError as exc:
            CACHE_LOOKUPS.labels("l2", "error").inc()
            log.warning("response cache read failed; treated as a miss", error=repr(exc))
            return None
        if shared is None:
            CACHE_LOOKUPS.labels("l2", "miss").inc()
            return None
        answer = _load(shared)
        if answer is None:
            CACHE_LOOKUPS.labels("l2", "error").inc()
            return None
        CACHE_LOOKUPS.labels("l2", "hit").inc()
        self.l1.put(key, shared)
        return answer

    async def put(self, key: str, answer: CachedAnswer) -> None:
        raw = answer.dumps()
        self.l1.put(key, raw)
        try:
            await self._redis.set(self.prefix + key, raw, ex=self.ttl_s)
        except RedisError as exc:
            log.warning("response cache write failed", error=repr(exc))

    async def invalidate(self, mode: str = ALL_MODES) -> int:
        """Remove the shared entries (all, or one mode's), tell every replica to clear its L1;
        the number of L2 entries removed."""
        pattern = _glob_escape(self.prefix) + ("*" if mode == ALL_MODES else f"{mode}:*")
        removed = 0
        try:
            batch: list[bytes] = []
            async for key in self._redis.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= DELETE_BATCH:
                    removed += await self._redis.unlink(*batch)
                    batch.clear()
            if batch:
                removed += await self._redis.unlink(*batch)
            await self._redis.publish(self.channel, mode.encode())
        except RedisError as exc:
            log.warning("cache invalidation failed", error=repr(exc))
            raise Unavailable("the shared cache is unavailable; retry") from exc
        finally:
            self.l1.clear(mode)
        log.info("response cache invalidated", mode=mode, removed=removed)
        return removed


class InvalidationListener:
    """Component: clears this replica's L1 when any replica publishes an invalidation."""

    name = "cache-invalidation"

    def __init__(self, redis: Redis, cache: ResponseCache, *, retry_s: float = 1.0) -> None:
        self._redis = redis
        self._cache = cache
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)
        # Subscribed before the service answers, so no invalidation is missed after start.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ready(self) -> bool:
        return self._task is not None and not self._task.done() and self._subscribed.is_set()

    async def _run(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._cache.channel)
                self._subscribed.set()
                while True:
                    message: dict[str, Any] | None = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=5
                    )
                    if message is not None and message["type"] == "message":
                        self._apply(message["data"])
            except RedisError as exc:
                self._subscribed.clear()
                # Missed messages cannot be replayed: drop L1 (the TTL bounds it otherwise).
                self._cache.l1.clear()
                log.warning("cache invalidation channel lost; resubscribing", error=repr(exc))
                await asyncio.sleep(self._retry_s)
            finally:
                with contextlib.suppress(RedisError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _apply(self, data: bytes | str) -> None:
        mode = data.decode() if isinstance(data, bytes) else data
        cleared = self._cache.l1.clear(mode or ALL_MODES)
        log.info("in-process cache cleared by invalidation", mode=mode, entries=cleared)
