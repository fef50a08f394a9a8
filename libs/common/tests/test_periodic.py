"""Periodic: runs every interval, outlives a failing run, stops cleanly."""

from __future__ import annotations

import asyncio

from aether_common.periodic import Periodic


class Flaky(Periodic):
    name = "flaky"

    def __init__(self) -> None:
        super().__init__(interval_s=0.01)
        self.runs = 0

    async def run_once(self) -> int:
        self.runs += 1
        if self.runs == 2:
            raise RuntimeError("a database hiccup")
        return self.runs


async def test_runs_every_interval_and_outlives_a_failure() -> None:
    job = Flaky()
    assert not await job.ready()
    await job.start()
    try:
        for _ in range(200):
            if job.runs >= 4:
                break
            await asyncio.sleep(0.01)
        assert job.runs >= 4  # the second run failed; the third and fourth still came
        assert await job.ready()
    finally:
        await job.stop()
    assert not await job.ready()
    runs = job.runs
    await asyncio.sleep(0.05)
    assert job.runs == runs  # stopped for good
