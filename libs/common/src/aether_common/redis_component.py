"""The Redis client as a lifecycle Component: start pings it, readiness pings it, stop closes it.

redis = RedisComponent(settings.redis_url, timeout_s=1.0)   # `redis.client` is the client
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError


class RedisComponent:
    name = "redis"

    def __init__(self, url: str, *, timeout_s: float, decode_responses: bool = False) -> None:
        # Connections open lazily; short timeouts so an outage fails calls fast instead of
        # stalling them.
        self.client: Redis = Redis.from_url(
            url,
            decode_responses=decode_responses,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )

    async def start(self) -> None:
        await self.client.ping()

    async def stop(self) -> None:
        await self.client.aclose()

    async def ready(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False
