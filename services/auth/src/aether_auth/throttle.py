"""Password-guessing defences in Redis: per-account lockout, per-IP limit, mail cool-downs.

Accounts are keyed by the normalised email whether or not the account exists, so an unknown
address locks exactly like a real one and answers never reveal which accounts exist. Keys hold
a hash of the address, never the address itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # "locked" (the account) or "throttled" (the client IP)
    retry_after: int  # seconds


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    locked_now: bool  # this failure locked the account
    lock_seconds: int


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class LoginThrottle:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        threshold: int,
        window_s: int,
        lock_s: int,
        ip_limit: int,
        ip_window_s: int,
    ) -> None:
        self._redis = redis
        self._prefix = prefix + "throttle:"
        self.threshold, self.window_s, self.lock_s = threshold, window_s, lock_s
        self.ip_limit, self.ip_window_s = ip_limit, ip_window_s

    def _keys(self, email: str) -> tuple[str, str]:
        account = _digest(email)
        return f"{self._prefix}fail:acct:{account}", f"{self._prefix}lock:acct:{account}"

    def _ip_key(self, ip: str) -> str:
        return f"{self._prefix}fail:ip:{_digest(ip)}"

    async def refusal(self, email: str, ip: str) -> Refusal | None:
        """Why an attempt must be refused before checking anything, or None."""
        _, lock_key = self._keys(email)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.ttl(lock_key)
            if ip:
                pipe.get(self._ip_key(ip))
                pipe.ttl(self._ip_key(ip))
            results = await pipe.execute()
        if results[0] > 0:
            return Refusal("locked", int(results[0]))
        if ip and results[1] is not None and int(results[1]) >= self.ip_limit:
            return Refusal("throttled", max(1, int(results[2])))
        return None

    async def record_failure(self, email: str, ip: str) -> FailureOutcome:
        fail_key, lock_key = self._keys(email)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(fail_key)
            pipe.expire(fail_key, self.window_s, nx=True)
            if ip:
                pipe.incr(self._ip_key(ip))
                pipe.expire(self._ip_key(ip), self.ip_window_s, nx=True)
            results = await pipe.execute()
        if int(results[0]) < self.threshold:
            return FailureOutcome(False, 0)
        # NX: only the failure that crossed the threshold locks (and reports it).
        locked_now = bool(await self._redis.set(lock_key, "1", ex=self.lock_s, nx=True))
        await self._redis.delete(fail_key)
        return FailureOutcome(locked_now, self.lock_s)

    async def clear(self, email: str) -> None:
        """A successful sign-in (or a password reset) forgives the account's failures."""
        await self._redis.delete(*self._keys(email))


class Cooldown:
    """At most one action per key per period (mails sent to one address)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix + "cooldown:"

    async def acquire(self, kind: str, key: str, seconds: int) -> int:
        """0 when the action may go ahead (and starts the period), else seconds to wait."""
        if seconds <= 0:
            return 0
        name = f"{self._prefix}{kind}:{_digest(key)}"
        if await self._redis.set(name, "1", ex=seconds, nx=True):
            return 0
        return max(1, int(await self._redis.ttl(name)))
