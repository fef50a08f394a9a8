"""Access tokens denied before they expire (logout, revoked sessions), checked in Redis.

The contract with auth (it writes, the gateway only reads; `<p>` = GATEWAY_REVOCATION_KEY_PREFIX,
default `auth:revoked:`):
- `<p>jti:<jti>` exists -> that access token is denied (Logout). Set it with a TTL of the
  token's remaining lifetime; the value is not read.
- `<p>sid:<sid>` exists -> every access token of that session (`sid` claim) is denied
  (a session revoked by password change, reset, or refresh-token reuse).
- `<p>user:<sub>` = unix seconds T -> the user's tokens issued before T (`iat` < T) are denied
  (account deleted, every session revoked).
The gateway also keeps its own denylist, `<gateway prefix>revoked:jti:<jti>`, written when a
logout or account deletion succeeds through it, so the caller's token stops working at once on
every gateway replica whatever auth does.

Redis down: the check fails open (logged and counted, see redis_fail_open.py). Auth re-checks the
tokens it receives itself, so its own RPCs stay protected.
"""

from __future__ import annotations

import math
import time

from redis.asyncio import Redis

from aether_gateway.redis_fail_open import RedisGuard


class Revocations:
    def __init__(
        self,
        auth_redis: Redis,
        own_redis: Redis,
        guard: RedisGuard,
        *,
        auth_prefix: str,
        own_prefix: str,
        grace_s: float = 0.0,
    ) -> None:
        self._auth_redis = auth_redis
        self._own_redis = own_redis
        self._guard = guard
        self._auth_prefix = auth_prefix
        self._own_prefix = own_prefix
        self._grace_s = grace_s  # the verifier's leeway: a token lives that much past exp

    @property
    def shares_server(self) -> bool:
        """auth's denylist lives on the gateway's own Redis (one round trip can check both)."""
        return self._auth_redis is self._own_redis

    @property
    def guard(self) -> RedisGuard:
        return self._guard

    def check_keys(self, jti: str, sid: str, sub: str) -> list[str]:
        """The keys `revoked_reason` reads, in the order revoked_or_limited.py's script expects:
        auth's jti, the gateway's own jti, the session, the user's not-before."""
        keys = self._keys(jti, sid, sub)
        return [keys["jti"], self.own_key(jti), keys["sid"], keys["user"]]

    def own_key(self, jti: str) -> str:
        return f"{self._own_prefix}revoked:jti:{jti}"

    def _keys(self, jti: str, sid: str, sub: str) -> dict[str, str]:
        p = self._auth_prefix
        return {"jti": f"{p}jti:{jti}", "sid": f"{p}sid:{sid}", "user": f"{p}user:{sub}"}

    async def revoked_reason(self, jti: str, sid: str, sub: str, iat: int) -> str | None:
        """Why the token is denied ("revoked", "session_revoked", "user_revoked"), or None."""

        async def check() -> str | None:
            keys = self._keys(jti, sid, sub)
            if self._auth_redis is self._own_redis:  # one round trip when they share a server
                found = await self._own_redis.mget([*keys.values(), self.own_key(jti)])
                own = found.pop()
            else:
                found = await self._auth_redis.mget(list(keys.values()))
                own = await self._own_redis.get(self.own_key(jti))
            values = dict(zip(keys, found, strict=True))
            if values["jti"] is not None or own is not None:
                return "revoked"
            if values["sid"] is not None:
                return "session_revoked"
            not_before = values["user"]
            if not_before is not None and iat < _as_int(not_before):
                return "user_revoked"
            return None

        return await self._guard.run("revocation_check", check, None)

    async def revoke_own(self, jti: str, expires_at: int) -> None:
        """Deny `jti` at every gateway while it would still be accepted (exp + leeway)."""
        ttl = max(1, math.ceil(expires_at + self._grace_s - time.time()))

        async def write() -> None:
            await self._own_redis.set(self.own_key(jti), "1", ex=ttl)

        await self._guard.run("revocation_write", write, None)


def _as_int(value: bytes | str) -> int:
    try:
        return int(float(value))
    except ValueError:
        return 0  # not a timestamp: deny nothing rather than everything
