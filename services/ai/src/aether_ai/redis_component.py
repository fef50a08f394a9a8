"""The Redis client as a lifecycle Component (readiness pings it; stop closes it)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError


class RedisComponent:
    name = "redis"

    def __init__(self, url: str, *, timeout_s: float) -> None:
        # Bytes in and out (cached answers are orjson bytes); connections open lazily.
        self.client: Redis = Redis.from_url(
            url,
            decode_responses=False,
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
