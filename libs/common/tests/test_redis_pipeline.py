"""AutoPipeline against a real Redis: batching, one outcome per command, scripts, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from aether_common.redis_pipeline import AutoPipeline
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port

COUNT_LUA = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
async def redis(aether_endpoints: Endpoints, redis_prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(aether_endpoints.redis_url, decode_responses=True)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


class CountingRedis:
    """Counts the round trips an AutoPipeline makes (plain calls and pipelines)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.calls = 0
        self.pipelines: list[int] = []

    async def execute_command(self, *args: Any) -> Any:
        self.calls += 1
        return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]

    def pipeline(self, **kwargs: Any) -> Any:
        pipe = self.redis.pipeline(**kwargs)
        execute = pipe.execute

        async def counted(raise_on_error: bool = True) -> list[Any]:
            self.pipelines.append(len(pipe.command_stack))
            return await execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe

    async def script_load(self, source: str) -> Any:
        return await self.redis.script_load(source)


async def test_commands_issued_during_a_round_trip_leave_as_one_pipeline(
    redis: Redis, redis_prefix: str
) -> None:
    counting = CountingRedis(redis)
    batch = AutoPipeline(counting)  # type: ignore[arg-type]
    await redis.set(f"{redis_prefix}a", "1")

    replies = await asyncio.gather(
        *(batch.execute("INCR", f"{redis_prefix}n") for _ in range(50)),
        batch.execute("GET", f"{redis_prefix}a"),
    )

    assert sorted(replies[:50]) == list(range(1, 51))
    assert replies[50] == "1"
    # The first goes at once; the 50 issued while it is in flight share one pipeline.
    assert (counting.calls, counting.pipelines) == (1, [50])


async def test_a_lone_command_is_a_plain_call(redis: Redis, redis_prefix: str) -> None:
    counting = CountingRedis(redis)
    batch = AutoPipeline(counting)  # type: ignore[arg-type]

    assert await batch.execute("SET", f"{redis_prefix}k", "v") is True
    assert await batch.execute("GET", f"{redis_prefix}k") == "v"

    assert (counting.calls, counting.pipelines) == (2, [])


async def test_a_failing_command_fails_only_its_caller(redis: Redis, redis_prefix: str) -> None:
    batch = AutoPipeline(redis)
    await redis.set(f"{redis_prefix}text", "not a number")

    results = await asyncio.gather(
        batch.execute("INCR", f"{redis_prefix}n"),
        batch.execute("INCR", f"{redis_prefix}text"),
        batch.execute("GET", f"{redis_prefix}text"),
        return_exceptions=True,
    )
    good, bad, also_good = results

    assert good == 1
    assert isinstance(bad, ResponseError)
    assert also_good == "not a number"


async def test_scripts_run_by_sha_and_are_loaded_again_after_a_flush(
    redis: Redis, redis_prefix: str
) -> None:
    batch = AutoPipeline(redis)
    count = batch.script(COUNT_LUA)
    key = f"{redis_prefix}counter"
    await redis.script_flush()  # as after a Redis restart: the sha is unknown

    first = await count(keys=[key], args=[2])
    together = await asyncio.gather(*(count(keys=[key], args=[1]) for _ in range(10)))

    assert first == 2
    assert sorted(together) == list(range(3, 13))
    assert (await redis.script_exists(count.sha)) == [True]


async def test_a_cancelled_caller_does_not_disturb_the_others(
    redis: Redis, redis_prefix: str
) -> None:
    batch = AutoPipeline(redis)
    key = f"{redis_prefix}n"
    calls = [asyncio.ensure_future(batch.execute("INCR", key)) for _ in range(6)]
    await asyncio.sleep(0)  # the first is in flight, the others wait for the next turn
    calls[3].cancel()

    results = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(results[3], asyncio.CancelledError)
    # Each other caller got its own reply. Which INCR ran first is not fixed: the plain call
    # may still be opening its connection when the pipeline of the others goes.
    others = [r for i, r in enumerate(results) if i != 3]
    assert len(set(others)) == 5
    assert set(others) <= set(range(1, 7))
    assert await redis.get(key) == "6"  # the cancelled one's command still ran


async def test_an_unreachable_redis_fails_every_command_of_the_batch() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    batch = AutoPipeline(dead)
    try:
        results = await asyncio.gather(
            *(batch.execute("GET", f"k{i}") for i in range(4)), return_exceptions=True
        )
        lone = await asyncio.gather(batch.execute("GET", "k"), return_exceptions=True)
    finally:
        await batch.aclose()
        await dead.aclose()

    assert all(isinstance(r, RedisConnectionError) for r in results), results
    assert isinstance(lone[0], RedisConnectionError)
