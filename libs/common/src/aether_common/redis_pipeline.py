"""Auto-pipelining: Redis commands issued in the same event-loop turn leave as one pipeline.

    batch = AutoPipeline(redis)
    value = await batch.execute("GET", key)
    limit = batch.script(LUA)                       # EVALSHA; loaded again after NOSCRIPT
    admitted = await limit(keys=[key], args=[60])

Why: redis-py spends a few hundred microseconds of CPU on each command's round trip (connection
pool, timeouts, parsing), more than the gateway's whole request otherwise costs; under load many
requests need Redis at once, and one pipeline for all of them costs a fraction per command
(`make bench-auth` prints the gateway's CPU per request). Nothing waits to fill a batch: a
command that finds no round trip in flight goes at once as a plain call; the ones issued while
a round trip is in flight gather, and leave together on the next loop turn.

Each command keeps its own outcome: one that fails (a Lua error, a wrong type) fails only its
caller; a connection failure fails every command of its batch with the same RedisError, so
callers handle outages exactly as with direct calls.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

_Command = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


class AutoPipeline:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[_Command] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._direct = 0  # plain calls in flight

    async def execute(self, *args: Any) -> Any:
        """One command (`"GET", key`): its reply, or its error raised."""
        if not self._direct and not self._flushing and not self._pending:
            # Nothing to share a round trip with: no pipeline, no extra loop turns.
            self._direct += 1
            try:
                return await cast(Any, self.redis).execute_command(*args)  # untyped in redis-py
            finally:
                self._direct -= 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((args, future))
        return await future

    def script(self, source: str) -> BatchedScript:
        return BatchedScript(self, source)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch), name="redis-pipeline")
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send(self, batch: list[_Command]) -> None:
        try:
            if len(batch) == 1:
                try:
                    # redis-py leaves execute_command untyped.
                    client = cast(Any, self.redis)
                    replies: Sequence[Any] = [await client.execute_command(*batch[0][0])]
                except Exception as exc:  # its caller's error, as from a direct call
                    replies = [exc]
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for args, _ in batch:
                        pipe.execute_command(*args)
                    replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise  # cancelled (shutting down): the waiters have been told
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller gave up (cancelled); the command still ran
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def aclose(self) -> None:
        """Wait for the batches in flight (their callers get their replies)."""
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)


class BatchedScript:
    """A Lua script run by EVALSHA through the pipeline; after NOSCRIPT (Redis restarted or
    flushed its script cache) it is loaded again and the call retried once."""

    def __init__(self, pipeline: AutoPipeline, source: str) -> None:
        self._pipeline = pipeline
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, *, keys: Sequence[str], args: Sequence[Any]) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await self._pipeline.execute(*command)
        except NoScriptError:
            await self._pipeline.redis.script_load(self.source)
            return await self._pipeline.execute(*command)
