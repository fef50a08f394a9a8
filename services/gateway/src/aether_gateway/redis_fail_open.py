"""Redis is an optimisation and a safety net here, never a single point of failure.

Every Redis operation the gateway makes (rate limit, denylist, profile cache) goes through
`RedisGuard.run`: when Redis fails, the request goes on without it (fail open), the failure is
counted (`aether_gateway_redis_fail_open_total{operation}`) and logged at most once per cooldown,
and Redis is skipped for `cooldown_s` so a dead Redis does not add its timeout to every request.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from aether_common.logging import get_logger
from aether_gateway.metrics import REDIS_FAIL_OPEN

T = TypeVar("T")

log = get_logger(__name__)


class RedisGuard:
    def __init__(self, cooldown_s: float = 1.0) -> None:
        self.cooldown_s = cooldown_s
        self._skip_until = 0.0

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self._skip_until

    async def run(self, operation: str, call: Callable[[], Awaitable[T]], fallback: T) -> T:
        if not self.healthy:
            REDIS_FAIL_OPEN.labels(operation).inc()
            return fallback
        try:
            return await call()
        except (TimeoutError, RedisError, OSError) as exc:
            was_healthy = self.healthy
            self._skip_until = time.monotonic() + self.cooldown_s
            REDIS_FAIL_OPEN.labels(operation).inc()
            if was_healthy:  # one line per outage window, not one per request
                log.warning(
                    "redis unavailable; failing open",
                    operation=operation,
                    error=f"{type(exc).__name__}: {exc}",
                    skip_seconds=self.cooldown_s,
                )
            return fallback
