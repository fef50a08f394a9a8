"""GET /api/auth/me answers cached in Redis per user (`<prefix>profile:<user id>`, JSON).

Filled on a miss, for `ttl_s` (10 minutes); dropped whenever the gateway relays a change to that
user's profile (PATCH me, password, MFA, email verification, access change, deletion). A change
made elsewhere shows after at most the TTL. Redis down: every lookup is a miss (fail open).
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from aether_gateway.metrics import PROFILE_CACHE
from aether_gateway.redis_guard import RedisGuard


class ProfileCache:
    def __init__(self, redis: Redis, guard: RedisGuard, *, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._guard = guard
        self._prefix = prefix
        self.ttl_s = ttl_s

    def key(self, user_id: str) -> str:
        return f"{self._prefix}profile:{user_id}"

    async def get(self, user_id: str) -> dict[str, Any] | None:
        if self.ttl_s <= 0:
            return None

        async def read() -> str | None:
            value: bytes | str | None = await self._redis.get(self.key(user_id))
            return value.decode() if isinstance(value, bytes) else value

        raw = await self._guard.run("profile_cache_get", read, None)
        if raw is None:
            PROFILE_CACHE.labels("miss").inc()
            return None
        try:
            profile: dict[str, Any] = json.loads(raw)
        except ValueError:
            PROFILE_CACHE.labels("corrupt").inc()
            return None
        PROFILE_CACHE.labels("hit").inc()
        return profile

    async def put(self, user_id: str, profile: dict[str, Any]) -> None:
        if self.ttl_s <= 0:
            return

        async def write() -> None:
            await self._redis.set(
                self.key(user_id), json.dumps(profile, separators=(",", ":")), ex=self.ttl_s
            )

        await self._guard.run("profile_cache_put", write, None)

    async def invalidate(self, user_id: str) -> None:
        async def delete() -> None:
            await self._redis.delete(self.key(user_id))

        await self._guard.run("profile_cache_invalidate", delete, None)
