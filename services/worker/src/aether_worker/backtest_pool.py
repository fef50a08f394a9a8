"""Where a backtest's CPU work runs: off the event loop, so the loop keeps heartbeating leases,
reporting progress and running the other job types meanwhile.

`ComputePool` (the service's choice) is a component owning a pool of spawned processes.
`backtesting` simulates bar by bar in Python code that holds the GIL (about 0.05 s per run over
2,000 daily bars on the dev machine), and a sweep is hundreds of runs: in a thread it would take
the GIL from the event loop for every other job of the process, in processes it uses the pod's
other cores and leaves the loop alone. The costs: the first run after start pays a worker's
imports (pandas, backtesting, matplotlib: about 2 s), and every run pickles its bars to the
worker (about 1 ms for 10,000 bars). Spawned, not forked: the parent runs gRPC's threads.

`InThread` runs the work in the loop's default thread pool: for tools and tests that do not
want processes (the numbers are the same: a run is deterministic either way).

This module imports neither backtesting nor matplotlib, so a worker process can quieten them
(`_quiet`) before they are first imported.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar

from aether_worker.handler import JobFailed

T = TypeVar("T")


class Compute(Protocol):
    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """`fn(*args)` away from the event loop (fn and args picklable for a process pool)."""
        ...


class InThread:
    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)


def _quiet() -> None:
    # backtesting draws a tqdm progress bar on stderr for every run; tqdm reads its TQDM_*
    # settings at import. matplotlib: headless.
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["MPLBACKEND"] = "Agg"


class ComputePool:
    """Component: `workers` spawned processes running backtests and drawing their charts."""

    name = "backtest-pool"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        if self._pool is None:
            self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_quiet,
        )

    async def stop(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def ready(self) -> bool:
        return self._pool is not None

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        pool = self._pool
        if pool is None:
            raise RuntimeError("the backtest pool is not started")
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool as exc:
            # A worker process died (killed, out of memory): the pool is unusable from now
            # on. A fresh one serves the next runs; this attempt is retried.
            if self._pool is pool:
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise JobFailed(
                "compute_crashed", "a backtest worker process died; retrying", retryable=True
            ) from exc
