"""Retries and the dead-letter list: a job that fails twice then succeeds (3 attempts, the
backoff between them honoured); a poison job that fails every attempt lands in the DLQ, where an
operator lists and replays it; a failure marked not retryable is dead at once; a timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from pydantic import BaseModel

from aether.worker.v1 import worker_pb2
from aether_common.errors import Forbidden, PreconditionFailed
from aether_devstack.testkit import failure
from aether_worker.handler import JobContext, JobFailed, JobType
from aether_worker.transitions import Backoff


class Empty(BaseModel):
    pass


async def test_a_job_failing_twice_then_succeeding_takes_three_attempts(
    start_worker: Any,
) -> None:
    started: list[float] = []

    async def flaky(ctx: JobContext, _: Empty) -> dict[str, Any]:
        started.append(time.monotonic())
        if ctx.attempt < 3:
            raise JobFailed("upstream_busy", f"attempt {ctx.attempt} failed")
        return {"attempt": ctx.attempt}

    # No jitter (rand = 1): retry n waits exactly 0.3 * 2^(n-1) s.
    worker = await start_worker(
        job_types=[JobType("test.flaky", Empty, flaky, user_may_submit=True)],
        backoff=Backoff(base_s=0.3, cap_s=5.0, rand=lambda: 1.0),
    )
    user = worker.auth(worker.user())
    job = await worker.submit(user, "test.flaky")

    # Between attempts: queued, the last error shown, the retry's time set.
    waiting = await worker.until(
        user, job.id, lambda j: j.status == "queued" and j.attempts == 1, what="a retry"
    )
    assert waiting.error.code == "upstream_busy"
    assert waiting.HasField("retry_at")
    done = await worker.finished(user, job.id)

    assert done.status == "completed"
    assert done.attempts == 3
    assert orjson.loads(done.result_json) == {"attempt": 3}
    assert not done.HasField("error")
    assert len(started) == 3
    assert started[1] - started[0] >= 0.3
    assert started[2] - started[1] >= 0.6
    assert [new for _, new in await worker.statuses(job.id)] == [
        "queued",
        "running",
        "queued",
        "running",
        "queued",
        "running",
        "completed",
    ]


async def test_a_poison_job_lands_in_the_dlq_and_an_operator_replays_it(
    start_worker: Any,
) -> None:
    poisoned = True

    async def poison(ctx: JobContext, _: Empty) -> dict[str, Any]:
        if poisoned:
            raise RuntimeError("cannot parse the input")
        return {"ok": True}

    worker = await start_worker(
        job_types=[JobType("test.poison", Empty, poison, user_may_submit=True, max_attempts=2)],
        retry_backoff_s=0.05,
    )
    user = worker.auth(worker.user())
    admin = worker.admin(worker.user("admin"))
    job = await worker.submit(user, "test.poison")

    dead = await worker.finished(user, job.id)
    assert dead.status == "failed"
    assert dead.attempts == 2
    assert dead.error.code == "handler_error"
    assert "cannot parse the input" in dead.error.message

    listed = await worker.stub.ListDeadJobs(worker_pb2.ListDeadJobsRequest(), metadata=admin)
    assert [j.id for j in listed.jobs] == [job.id]
    error = await failure(worker.stub.ListDeadJobs(worker_pb2.ListDeadJobsRequest(), metadata=user))
    assert isinstance(error, Forbidden)
    error = await failure(
        worker.stub.ReplayDeadJob(worker_pb2.ReplayDeadJobRequest(id=job.id), metadata=user)
    )
    assert isinstance(error, Forbidden)

    poisoned = False  # the operator fixed the cause
    replayed = await worker.stub.ReplayDeadJob(
        worker_pb2.ReplayDeadJobRequest(id=job.id), metadata=admin
    )
    assert replayed.job.status == "queued"
    assert replayed.job.attempts == 0
    done = await worker.finished(user, job.id)

    assert done.status == "completed"
    assert done.attempts == 1
    assert orjson.loads(done.result_json) == {"ok": True}
    empty = await worker.stub.ListDeadJobs(worker_pb2.ListDeadJobsRequest(), metadata=admin)
    assert list(empty.jobs) == []
    # Only dead jobs are replayed.
    error = await failure(
        worker.stub.ReplayDeadJob(worker_pb2.ReplayDeadJobRequest(id=job.id), metadata=admin)
    )
    assert isinstance(error, PreconditionFailed)


async def test_a_failure_that_no_retry_can_fix_is_dead_at_once(start_worker: Any) -> None:
    async def bad_data(ctx: JobContext, _: Empty) -> dict[str, Any]:
        raise JobFailed("invalid_data", "no bars for that symbol", retryable=False)

    worker = await start_worker(
        job_types=[JobType("test.bad", Empty, bad_data, user_may_submit=True)]
    )
    user = worker.auth(worker.user())
    job = await worker.submit(user, "test.bad")

    done = await worker.finished(user, job.id)

    assert (done.status, done.attempts, done.error.code) == ("failed", 1, "invalid_data")
    assert done.error.message == "no bars for that symbol"


async def test_an_attempt_past_its_timeout_fails_as_timeout(start_worker: Any) -> None:
    async def hangs(ctx: JobContext, _: Empty) -> dict[str, Any]:
        await asyncio.sleep(30)
        return {}

    worker = await start_worker(
        job_types=[
            JobType("test.hangs", Empty, hangs, user_may_submit=True, max_attempts=1, timeout_s=0.3)
        ]
    )
    user = worker.auth(worker.user())
    job = await worker.submit(user, "test.hangs")

    done = await worker.finished(user, job.id)

    assert (done.status, done.error.code) == ("failed", "timeout")
