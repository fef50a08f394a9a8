"""`noop`: a job that does nothing for `sleep_ms` (0-60000), reporting progress as it goes.
Operators only; the bench measures the job system itself with it, tests use it as a plain job.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aether_worker.handler import JobContext, JobType

# Progress (and a cancellation checkpoint) every this many milliseconds of sleep.
STEP_MS = 200


class NoopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sleep_ms: int = Field(default=0, ge=0, le=60_000)


async def run(ctx: JobContext, params: NoopParams) -> dict[str, Any]:
    started = time.monotonic()
    left = params.sleep_ms
    while left > 0:
        step = min(STEP_MS, left)
        await asyncio.sleep(step / 1000)
        left -= step
        await ctx.progress(round(100 * (params.sleep_ms - left) / params.sleep_ms), "sleeping")
    return {
        "slept_ms": params.sleep_ms,
        "attempt": ctx.attempt,
        "took_ms": round((time.monotonic() - started) * 1000),
    }


NOOP = JobType(name="noop", params=NoopParams, run=run, user_may_submit=False, concurrency=8)
