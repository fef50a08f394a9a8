"""Where a backtest's CPU work runs: off the event loop, so the loop keeps heartbeating leases,
reporting progress and running the other job types meanwhile.

`ComputePool` (the service's choice) is a component owning a pool of spawned processes.
`backtesting` simulates bar by bar in Python code that holds the GIL (measured on the 2-core dev
machine: 0.04-0.07 s per run over GOOG's 2,148 daily bars, 0.16-0.25 s over 10,000 hourly bars;
drawing the equity chart 0.5 s), and a sweep is up to 500 runs: in a thread it would take the
GIL from the event loop for every other job of the process, in processes it uses the pod's other
cores and leaves the loop alone. The costs: a worker process's start (spawned, it imports the
main module again: 3-4.5 s for the first run of a fresh pool here), and every run pickles its
bars to the worker (0.8 ms for 10,000 bars). Spawned, not forked: the parent runs gRPC's
threads.

`InThread` runs the work in the loop's default thread pool: for tools and tests that do not
want processes (the numbers are the same: a run is deterministic either way).

A worker process's stderr is this process's: the pool turns backtesting's progress bars off.
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


class ComputePool:
    """Component: `workers` spawned processes running backtests and drawing their charts."""

    name = "backtest-pool"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        # backtesting draws a tqdm progress bar on stderr for every run, and tqdm reads its
        # TQDM_* settings when first imported. A spawned worker imports it (through the main
        # module, which imports backtesting) before any initializer could run, and gets this
        # process's environment: so it is set here.
        os.environ.setdefault("TQDM_DISABLE", "1")
        if self._pool is None:
            self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers, mp_context=multiprocessing.get_context("spawn")
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
