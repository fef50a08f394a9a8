"""The request queue: at most `max_concurrency` model calls at once in this replica.

A request that finds every slot taken waits, first come first served, up to `timeout_s`; then it
fails UNAVAILABLE with error code "ai_busy" and a Retry-After. Cache hits never take a slot. The
slot is held from before the model call until its stream is closed, so a cancelled generation
frees it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aether_ai.metrics import IN_FLIGHT, QUEUE_DEPTH, QUEUE_REJECTED
from aether_common.errors import Unavailable

BUSY_CODE = "ai_busy"


class ModelSlots:
    def __init__(self, max_concurrency: int, *, timeout_s: float) -> None:
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self.waiting = 0
        self.in_flight = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block; UNAVAILABLE ai_busy after waiting `timeout_s`."""
        await self._acquire()
        self.in_flight += 1
        IN_FLIGHT.inc()
        try:
            yield
        finally:
            self.in_flight -= 1
            IN_FLIGHT.dec()
            self._semaphore.release()

    async def _acquire(self) -> None:
        if not self._semaphore.locked():
            await self._semaphore.acquire()
            return
        self.waiting += 1
        QUEUE_DEPTH.inc()
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._semaphore.acquire()
        except TimeoutError:
            QUEUE_REJECTED.inc()
            raise Unavailable(
                f"the AI service is busy: all {self.max_concurrency} model slots stayed taken "
                f"for {self.timeout_s:g}s; retry shortly",
                code=BUSY_CODE,
                retry_after=max(1.0, self.timeout_s / 2),
            ) from None
        finally:
            self.waiting -= 1
            QUEUE_DEPTH.dec()
