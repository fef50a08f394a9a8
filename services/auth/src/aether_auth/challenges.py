"""MFA challenges: what Login / FinishOAuth hand out instead of tokens when MFA is on.

A challenge is an opaque random token (only its hash is a Redis key), bound to the user and
the first factor that earned it, short-lived, limited in wrong codes and usable once.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from aether_auth.crypto import random_token, token_hash


@dataclass(frozen=True, slots=True)
class Challenge:
    user_id: str
    first_factor: str  # "password" or "oauth:<provider>"


class MfaChallenges:
    def __init__(self, redis: Redis, prefix: str, *, ttl_s: int, max_attempts: int) -> None:
        self._redis = redis
        self._prefix = prefix + "mfa-challenge:"
        self.ttl_s = ttl_s
        self.max_attempts = max_attempts

    def _key(self, token: str) -> str:
        return self._prefix + token_hash(token).hex()

    async def create(self, user_id: str, first_factor: str) -> str:
        token = random_token()
        key = self._key(token)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"user_id": user_id, "first_factor": first_factor})
            pipe.expire(key, self.ttl_s)
            await pipe.execute()
        return token

    async def get(self, token: str) -> Challenge | None:
        if not token:
            return None
        data = await self._redis.hgetall(self._key(token))
        if not data or "user_id" not in data:
            return None
        return Challenge(str(data["user_id"]), str(data.get("first_factor", "password")))

    async def record_wrong_code(self, token: str) -> int:
        """Attempts left; the challenge is gone when none are."""
        key = self._key(token)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "attempts", 1)
            # NX: keeps the challenge's own expiry; bounds a key that expired meanwhile.
            pipe.expire(key, self.ttl_s, nx=True)
            attempts = int((await pipe.execute())[0])
        if attempts >= self.max_attempts:
            await self._redis.delete(key)
            return 0
        return self.max_attempts - attempts

    async def consume(self, token: str) -> bool:
        """True for exactly one caller, however many race with the same challenge."""
        return bool(await self._redis.delete(self._key(token)))
