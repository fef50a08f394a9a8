"""The Redis client as a lifecycle Component (readiness pings it; stop closes it)."""

from __future__ import annotations

from redis.asyncio import Redis


class RedisComponent:
    name = "redis"

    def __init__(self, url: str) -> None:
        # Connections open lazily; short timeouts so an outage fails calls fast.
        self.client: Redis = Redis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )

    async def start(self) -> None:
        await self.client.ping()

    async def stop(self) -> None:
        await self.client.aclose()

    async def ready(self) -> bool:
        return bool(await self.client.ping())
