"""Lanes, cancel and watch: a slow job blocks neither a fast job behind it on the same partition
nor another type's jobs (each type has its own consumer and slots); cancelling a queued job
(at once) and a running one (at its next checkpoint); WatchJob streams progress, then the
final status, and ends."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from aether.worker.v1 import worker_pb2
from aether_common.errors import NotFound, PreconditionFailed
from aether_devstack.testkit import failure, stream_failure
from aether_worker.handler import JobContext, JobType
from aether_worker.noop import NOOP


class SlowParams(BaseModel):
    fast: bool = False


class Empty(BaseModel):
    pass


@pytest.fixture
def release() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
def types(release: asyncio.Event) -> list[JobType]:
    async def slow(ctx: JobContext, params: SlowParams) -> dict[str, Any]:
        if params.fast:
            return {"fast": True}
        while not release.is_set():
            await ctx.checkpoint()
            await asyncio.sleep(0.02)
        return {"fast": False}

    async def quick(ctx: JobContext, _: Empty) -> dict[str, Any]:
        return {"quick": True}

    return [
        NOOP,
        JobType("test.slow", SlowParams, slow, user_may_submit=True, concurrency=2),
        JobType("test.quick", Empty, quick, user_may_submit=True, concurrency=1),
    ]


def running(job: worker_pb2.Job) -> bool:
    return job.status == "running"


async def test_a_slow_job_blocks_neither_the_job_behind_it_nor_other_types(
    start_worker: Any, types: list[JobType], release: asyncio.Event
) -> None:
    # One partition: every test.slow message is behind the first.
    worker = await start_worker(job_types=types, work_partitions=1, concurrent_free=10)
    user = worker.auth(worker.user())
    slow = await worker.submit(user, "test.slow")
    await worker.until(user, slow.id, running, what="the slow job running")

    behind = await worker.submit(user, "test.slow", {"fast": True})
    assert (await worker.finished(user, behind.id)).status == "completed"

    # Both slots busy: the third slow job waits its turn, queued...
    second = await worker.submit(user, "test.slow")
    await worker.until(user, second.id, running, what="the second slow job running")
    third = await worker.submit(user, "test.slow")
    # ... while another type's job runs at once.
    quick = await worker.submit(user, "test.quick")
    assert (await worker.finished(user, quick.id)).status == "completed"
    assert (await worker.get(user, third.id)).status == "queued"
    assert (await worker.get(user, slow.id)).status == "running"

    release.set()
    for job in (slow, second, third):
        done = await worker.finished(user, job.id)
        assert (done.status, done.attempts) == ("completed", 1)


async def test_cancel_a_queued_job_at_once_and_a_running_one_at_its_checkpoint(
    start_worker: Any, types: list[JobType]
) -> None:
    worker = await start_worker(job_types=types, work_partitions=1, concurrent_free=10)
    user = worker.auth(worker.user())
    first = await worker.submit(user, "test.slow")
    second = await worker.submit(user, "test.slow")
    await worker.until(user, first.id, running)
    await worker.until(user, second.id, running)
    queued = await worker.submit(user, "test.slow")  # no slot left: stays queued

    answer = await worker.stub.CancelJob(worker_pb2.CancelJobRequest(id=queued.id), metadata=user)
    assert answer.job.status == "cancelled"
    assert answer.job.error.code == "cancelled"

    answer = await worker.stub.CancelJob(worker_pb2.CancelJobRequest(id=first.id), metadata=user)
    assert (answer.job.status, answer.job.cancel_requested) == ("running", True)
    done = await worker.finished(user, first.id)
    assert (done.status, done.error.code, done.attempts) == ("cancelled", "cancelled", 1)

    # A finished job stays as it is; another user's is not found.
    error = await failure(
        worker.stub.CancelJob(worker_pb2.CancelJobRequest(id=first.id), metadata=user)
    )
    assert isinstance(error, PreconditionFailed)
    error = await failure(
        worker.stub.CancelJob(
            worker_pb2.CancelJobRequest(id=second.id), metadata=worker.auth(worker.user())
        )
    )
    assert isinstance(error, NotFound)
    # The queued one's message, when it comes, finds nothing to run.
    await asyncio.sleep(0.5)
    assert (await worker.get(user, queued.id)).attempts == 0


async def test_watch_streams_progress_then_the_final_status(
    start_worker: Any, types: list[JobType]
) -> None:
    worker = await start_worker(job_types=types)
    admin = worker.admin(worker.user("admin"))
    job = await worker.submit(admin, "noop", {"sleep_ms": 1000})

    seen = [
        answer.job
        async for answer in worker.stub.WatchJob(
            worker_pb2.WatchJobRequest(id=job.id), metadata=admin
        )
    ]

    assert seen[-1].status == "completed"
    assert orjson.loads(seen[-1].result_json)["slept_ms"] == 1000
    assert all(j.status != "completed" for j in seen[:-1])
    progress = [j.progress for j in seen if j.status == "running"]
    assert any(0 < p < 100 for p in progress), progress
    assert progress == sorted(progress)


async def test_watching_another_users_job_is_not_found(
    start_worker: Any, types: list[JobType]
) -> None:
    worker = await start_worker(job_types=types, events=False)
    job = await worker.submit(worker.auth(worker.user()), "test.quick")

    error = await stream_failure(
        worker.stub.WatchJob(
            worker_pb2.WatchJobRequest(id=job.id), metadata=worker.auth(worker.user())
        )
    )
    assert isinstance(error, NotFound)
