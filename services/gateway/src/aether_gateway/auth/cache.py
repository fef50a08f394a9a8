"""GET /api/auth/me answers cached in Redis per user, for `ttl_s` (10 minutes).

Filled on a miss; dropped whenever the gateway relays a change to that user's profile (PATCH me,
password, MFA, email verification, access change, deletion). A change made elsewhere shows after
at most the TTL. Redis down: every lookup is a miss (fail open).

The cached value is the exact JSON the route answers with, so a hit is sent as it is, never
parsed and serialised again. The key (`<prefix>profile:<shape>:<user id>`) carries a
fingerprint of the answer's schema: a release that changes the shape of UserOut never serves
an answer cached by an older one.
"""

from __future__ import annotations

import hashlib
import json

from redis.asyncio import Redis

from aether_common.redis_pipeline import AutoPipeline
from aether_gateway.auth.schemas import UserOut
from aether_gateway.metrics import PROFILE_CACHE
from aether_gateway.redis_fail_open import RedisGuard

SHAPE = hashlib.sha256(
    json.dumps(UserOut.model_json_schema(), sort_keys=True).encode()
).hexdigest()[:12]


class ProfileCache:
    def __init__(
        self, redis: Redis, pipeline: AutoPipeline, guard: RedisGuard, *, prefix: str, ttl_s: int
    ) -> None:
        self._redis = redis
        self._pipeline = pipeline  # reads: many requests at once share a round trip
        self._guard = guard
        self._prefix = prefix
        self.ttl_s = ttl_s

    def key(self, user_id: str) -> str:
        return f"{self._prefix}profile:{SHAPE}:{user_id}"

    async def get(self, user_id: str) -> bytes | None:
        """The cached answer (JSON), or None."""
        if self.ttl_s <= 0:
            return None

        async def read() -> bytes | None:
            value: bytes | str | None = await self._pipeline.execute("GET", self.key(user_id))
            return value.encode() if isinstance(value, str) else value

        cached = await self._guard.run("profile_cache_get", read, None)
        PROFILE_CACHE.labels("miss" if cached is None else "hit").inc()
        return cached

    async def put(self, user_id: str, answer: UserOut) -> None:
        if self.ttl_s <= 0:
            return

        async def write() -> None:
            await self._redis.set(self.key(user_id), answer.model_dump_json(), ex=self.ttl_s)

        await self._guard.run("profile_cache_put", write, None)

    async def invalidate(self, user_id: str) -> None:
        async def delete() -> None:
            await self._redis.delete(self.key(user_id))

        await self._guard.run("profile_cache_invalidate", delete, None)
