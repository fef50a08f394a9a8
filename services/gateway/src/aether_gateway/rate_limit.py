"""Per-plan rate limits in Redis: a sliding-window log, decided atomically in one Lua script.

Why a log and not a fixed window or GCRA: "60 per minute" then holds for EVERY 60-second window
(a fixed window lets 2x through across its boundary; GCRA with a full burst allows close to 2x
in a minute). The cost is one sorted-set member per admitted request, at most `limit` per caller.

The script reads Redis's clock (TIME), so gateway replicas with skewed clocks share one timeline,
and it runs atomically, so concurrent requests can never admit more than the limit. Refused
requests are not recorded: a client that keeps hammering gets in again once its window frees up.

Subjects: `<prefix>rl:user:<user id>` for a verified caller, `<prefix>rl:ip:<client ip>` for
anonymous ones (and for requests whose token did not verify).
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from aether_common.redis_pipeline import AutoPipeline
from aether_gateway.metrics import RATE_LIMITED
from aether_gateway.redis_fail_open import RedisGuard

ANONYMOUS_PLAN = "anonymous"
DEFAULT_PLAN = "free"
# Granted by auth with the admin plan; exempts a caller whatever the configured limits say.
UNLIMITED_PERMISSION = "ratelimit:unlimited"

# window(key, limit, window ms, unique member suffix) -> admitted (0/1), remaining, retry ms.
# Shared by the plain limit script and the gateway's access check (revoked_or_limited.py).
WINDOW_LUA = """
local function window(key, limit, window_ms, suffix)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_ms)
  local count = redis.call('ZCARD', key)
  if count < limit then
    redis.call('ZADD', key, now, now .. ':' .. suffix)
    redis.call('PEXPIRE', key, window_ms)
    return 1, limit - count - 1, 0
  end
  -- The entry whose expiry brings the count back under the limit (the oldest, unless the
  -- limit was lowered while the log was fuller).
  local entry = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
  local retry = window_ms
  if entry[2] then retry = tonumber(entry[2]) + window_ms - now end
  return 0, 0, retry
end
"""
# KEYS[1] = the subject's log; ARGV = limit, window in ms, a unique suffix for the member.
# Returns {admitted (0/1), remaining, retry after in ms}.
SLIDING_WINDOW_LUA = (
    WINDOW_LUA
    + """
local admitted, remaining, retry = window(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
return {admitted, remaining, retry}
"""
)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int  # whole seconds, rounded up; 0 when allowed

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


class RatePolicy:
    """Which limit applies: by plan for a verified caller, the anonymous one per IP otherwise."""

    def __init__(self, plan_limits: Mapping[str, int | None], anonymous_limit: int | None) -> None:
        self.plan_limits = dict(plan_limits)
        self.anonymous_limit = anonymous_limit

    def limit_for(self, plan: str | None) -> int | None:
        """None means unlimited. An unknown plan gets the free plan's limit, not a free pass."""
        if plan is None or plan == ANONYMOUS_PLAN:
            return self.anonymous_limit
        if plan in self.plan_limits:
            return self.plan_limits[plan]
        return self.plan_limits.get(DEFAULT_PLAN)


class RateLimiter:
    def __init__(
        self,
        redis: AutoPipeline,
        guard: RedisGuard,
        policy: RatePolicy,
        *,
        prefix: str,
        window_s: float,
    ) -> None:
        self._script = redis.script(SLIDING_WINDOW_LUA)
        self._guard = guard
        self.policy = policy
        self._prefix = prefix
        self.window_ms = max(1, int(window_s * 1000))
        # Members of a window log must be unique across replicas: a random process prefix and
        # a counter (cheaper than a uuid per request).
        self._members = itertools.count()
        self._member_prefix = secrets.token_hex(8)

    def member(self) -> str:
        return f"{self._member_prefix}{next(self._members)}"

    def key(self, kind: str, subject: str) -> str:
        return f"{self._prefix}rl:{kind}:{subject}"

    def subject(
        self,
        user_id: str | None,
        plan: str | None,
        ip: str,
        permissions: frozenset[str] = frozenset(),
    ) -> tuple[str, int, str] | None:
        """(key, limit, plan label) that applies to the caller; None = not limited."""
        limit = self.policy.limit_for(plan if user_id is not None else None)
        if limit is None or UNLIMITED_PERMISSION in permissions:
            return None
        if user_id is None:
            return self.key("ip", ip_bucket(ip)), limit, ANONYMOUS_PLAN
        return self.key("user", user_id), limit, plan or DEFAULT_PLAN

    async def check(
        self,
        user_id: str | None,
        plan: str | None,
        ip: str,
        permissions: frozenset[str] = frozenset(),
    ) -> Decision | None:
        """Count this request for the caller (the user, else the IP); None = not limited."""
        subject = self.subject(user_id, plan, ip, permissions)
        if subject is None:
            return None
        key, limit, label = subject
        decision = await self.hit(key, limit)
        if decision is not None:
            self.record(decision, label)
        return decision

    @staticmethod
    def decision(limit: int, admitted: int, remaining: int, retry_ms: int) -> Decision:
        retry_s = 0 if admitted else max(1, math.ceil(int(retry_ms) / 1000))
        return Decision(bool(admitted), limit, int(remaining), retry_s)

    @staticmethod
    def record(decision: Decision, plan_label: str) -> None:
        if not decision.allowed:
            RATE_LIMITED.labels(plan_label).inc()

    async def hit(self, key: str, limit: int) -> Decision | None:
        """Count one request against `key`; None when Redis is unavailable (fail open)."""

        async def evaluate() -> Decision:
            admitted, remaining, retry_ms = await self._script(
                keys=[key], args=[limit, self.window_ms, self.member()]
            )
            return self.decision(limit, admitted, remaining, retry_ms)

        return await self._guard.run("rate_limit", evaluate, None)


def ip_bucket(ip: str) -> str:
    """An IPv6 client owns at least a /64, so it is limited as one; IPv4 per address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def rate_limited_body(retry_after_s: int) -> dict[str, object]:
    """The 429 body the platform documents, plus the `error` code every other error carries."""
    return {
        "error": "rate_limited",
        "detail": f"Rate limit exceeded. Try again in {retry_after_s} seconds.",
        "status_code": 429,
    }
