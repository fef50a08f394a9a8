"""Access tokens refused before they expire, in Redis (the gateway reads the same keys).

Keys, under `<redis prefix>revoked:` (default `auth:revoked:`):
- `jti:<jti>`: that token (Logout);
- `sid:<sid>`: every token of that session (a revoked refresh-token family);
- `user:<sub>` = unix seconds T: the user's tokens issued before T (every session revoked,
  account deleted).
Entries live only as long as an access token can, so the list stays small.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from redis.asyncio import Redis

from aether_common.redis_pipeline import AutoPipeline

# Beyond the access-token TTL: the verifiers' clock-skew leeway.
_LEEWAY_S = 60


class RevocationList:
    def __init__(self, redis: Redis, prefix: str, access_token_ttl_s: int) -> None:
        self._redis = redis
        # The check runs on every authenticated call: concurrent ones share a round trip.
        self._reads = AutoPipeline(redis)
        self.prefix = prefix + "revoked:"
        self._ttl = access_token_ttl_s + _LEEWAY_S

    def _jti(self, jti: str) -> str:
        return f"{self.prefix}jti:{jti}"

    def _sid(self, sid: str) -> str:
        return f"{self.prefix}sid:{sid}"

    def _user(self, sub: str) -> str:
        return f"{self.prefix}user:{sub}"

    async def revoke_token(self, jti: str, expires_at: int) -> None:
        seconds_left = math.ceil(expires_at - time.time()) + _LEEWAY_S
        if seconds_left > 0:
            await self._redis.set(self._jti(jti), "1", ex=seconds_left)

    async def revoke_sessions(self, session_ids: Iterable[str]) -> None:
        keys = [self._sid(sid) for sid in session_ids]
        if not keys:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, "1", ex=self._ttl)
            await pipe.execute()

    async def revoke_user_tokens(self, sub: str, before: int) -> None:
        """Refuse the user's tokens issued before `before` (unix seconds)."""
        await self._redis.set(self._user(sub), str(before), ex=self._ttl)

    async def is_revoked(self, *, jti: str, sid: str, sub: str, iat: int) -> bool:
        """One round trip: this runs on every authenticated call."""
        token, session, user = await self._reads.execute(
            "MGET", self._jti(jti), self._sid(sid), self._user(sub)
        )
        if token is not None or session is not None:
            return True
        return user is not None and iat < int(user)
