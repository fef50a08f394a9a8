"""The service's door to its embedder: concurrent calls coalesce into one model call.

Ten Search RPCs arriving together become one batch of ten queries instead of ten model calls
queued behind each other (on a CPU, one batch of n costs far less than n batches of one). A
worker takes whatever is waiting when it becomes free, so a lone call is never delayed to wait
for company. The local model gets one worker (concurrent ONNX runs only fight over the cores);
an HTTP endpoint gets several. Every model call is counted and timed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aether_memory.embeddings.base import Embedder, Vectors
from aether_memory.metrics import EMBED_BATCH_SIZE, EMBED_DURATION, EMBED_FAILURES, TEXTS_EMBEDDED


@dataclass
class _Job:
    texts: Sequence[str]
    future: asyncio.Future[Vectors] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Embeddings:
    """Component: the embedder plus the coalescing workers (started and stopped with it)."""

    name = "embeddings"

    def __init__(self, embedder: Embedder, *, batch_size: int, workers: int = 1) -> None:
        self.embedder = embedder
        self.batch_size = batch_size
        self.workers = workers
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def model(self) -> str:
        return self.embedder.model

    @property
    def dimensions(self) -> int:
        return self.embedder.dimensions

    async def start(self) -> None:
        await self.embedder.start()
        self._tasks = [
            asyncio.create_task(self._work(), name=f"embeddings-worker-{n}")
            for n in range(self.workers)
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the embeddings worker stopped"))
        await self.embedder.stop()

    async def ready(self) -> bool:
        return bool(self._tasks) and all(not t.done() for t in self._tasks)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One unit vector per text, in order (float32, shape (len(texts), dimensions))."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        if not self._tasks:
            raise RuntimeError("embeddings not started")
        job = _Job(texts)
        self._queue.put_nowait(job)
        return await job.future

    async def _work(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            count = len(jobs[0].texts)
            while count < self.batch_size and not self._queue.empty():
                job = self._queue.get_nowait()
                jobs.append(job)
                count += len(job.texts)
            jobs = [job for job in jobs if not job.future.done()]  # callers that gave up
            if jobs:
                await self._run(jobs)

    async def _run(self, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        kind = self.embedder.kind
        started = time.perf_counter()
        try:
            vectors = await self.embedder.embed(texts)
        except asyncio.CancelledError:  # stopping: nobody may wait forever
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(RuntimeError("the embeddings worker stopped"))
            raise
        except Exception as exc:  # handed to every caller of the batch, typed there
            EMBED_FAILURES.labels(kind).inc()
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        EMBED_DURATION.labels(kind).observe(time.perf_counter() - started)
        EMBED_BATCH_SIZE.labels(kind).observe(len(texts))
        TEXTS_EMBEDDED.labels(kind).inc(len(texts))
        offset = 0
        for job in jobs:
            part = vectors[offset : offset + len(job.texts)]
            offset += len(job.texts)
            if not job.future.done():
                job.future.set_result(part)
