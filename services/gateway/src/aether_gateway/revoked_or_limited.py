"""Per request: is the token revoked, and may the caller pass the rate limit? One Redis round trip.

When auth's denylist shares the gateway's Redis (the usual deployment), one Lua script reads the
revocation keys (revocation.py's contract) and, only if the token is not revoked, counts the
request in the caller's sliding window (rate_limit.py); a revoked token's request is then
limited per IP like any anonymous one. With a separate denylist server the two checks are two
calls. Either way Redis failing fails open (redis_fail_open.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from aether_common.access_tokens import AccessToken
from aether_common.redis_pipeline import AutoPipeline
from aether_gateway.rate_limit import WINDOW_LUA, Decision, RateLimiter
from aether_gateway.revocation import Revocations

# KEYS = auth jti, own jti, session, user not-before, the caller's rate-limit log (when limited);
# ARGV = iat, limit (0: not limited), window ms, member suffix.
# Returns {0 (not revoked), admitted, remaining, retry ms} or {reason code}.
ACCESS_LUA = (
    WINDOW_LUA
    + """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return {1} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {2} end
local not_before = tonumber(redis.call('GET', KEYS[4]) or '')
if not_before and tonumber(ARGV[1]) < not_before then return {3} end
local limit = tonumber(ARGV[2])
if limit == 0 then return {0} end
local admitted, remaining, retry = window(KEYS[5], limit, tonumber(ARGV[3]), ARGV[4])
return {0, admitted, remaining, retry}
"""
)
REVOKED_REASONS = {1: "revoked", 2: "session_revoked", 3: "user_revoked"}


@dataclass(frozen=True, slots=True)
class GateResult:
    revoked_reason: str | None = None
    decision: Decision | None = None  # None: not limited (or Redis unavailable)


class AccessGate:
    def __init__(self, limiter: RateLimiter, revocations: Revocations, redis: AutoPipeline) -> None:
        self.limiter = limiter
        self.revocations = revocations
        self._script = redis.script(ACCESS_LUA)

    async def check(self, token: AccessToken | None, ip: str, *, limits: bool = True) -> GateResult:
        if token is None:
            return GateResult(decision=await self._limit_anonymous(ip, limits))
        subject = (
            self.limiter.subject(token.subject, token.plan, ip, token.permissions)
            if limits
            else None
        )
        if not self.revocations.shares_server:
            reason = await self.revocations.revoked_reason(
                token.jti, token.session_id, token.subject, token.issued_at
            )
            if reason is not None:
                return GateResult(reason, await self._limit_anonymous(ip, limits))
            if subject is None:
                return GateResult()
            decision = await self.limiter.check(token.subject, token.plan, ip, token.permissions)
            return GateResult(decision=decision)

        keys = self.revocations.check_keys(token.jti, token.session_id, token.subject)
        key, limit, label = subject if subject is not None else ("", 0, "")
        if subject is not None:
            keys.append(key)
        args = [token.issued_at, limit, self.limiter.window_ms, self.limiter.member()]

        async def evaluate() -> list[int] | None:
            result: list[int] = await self._script(keys=keys, args=args)
            return result

        result = await self.revocations.guard.run("access_check", evaluate, None)
        if result is None:  # Redis unavailable: fail open
            return GateResult()
        code = int(result[0])
        if code:
            return GateResult(REVOKED_REASONS[code], await self._limit_anonymous(ip, limits))
        if subject is None:
            return GateResult()
        admitted, remaining, retry_ms = (int(v) for v in result[1:4])
        decision = self.limiter.decision(limit, admitted, remaining, retry_ms)
        self.limiter.record(decision, label)
        return GateResult(decision=decision)

    async def _limit_anonymous(self, ip: str, limits: bool) -> Decision | None:
        return await self.limiter.check(None, None, ip) if limits else None
