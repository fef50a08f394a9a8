"""Async jobs: submit/get, the runner (success, retries then failure, expired leases, stop)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from aether.ai.v1 import ai_pb2
from aether_ai.jobs import GENERIC_FAILURE, JobResult, JobRunner, Jobs
from aether_common.errors import Unavailable, ValidationFailed
from aether_common.postgres import PostgresDatabase

QUEUED, RUNNING = ai_pb2.JOB_STATUS_QUEUED, ai_pb2.JOB_STATUS_RUNNING
SUCCEEDED, FAILED = ai_pb2.JOB_STATUS_SUCCEEDED, ai_pb2.JOB_STATUS_FAILED


class EchoModel:
    """A small real `run`: answers from the request, or raises what it was told to."""

    def __init__(self, fail_with: Callable[[], Exception] | None = None) -> None:
        self.fail_with = fail_with
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, user_id: str, request: ai_pb2.ChatRequest) -> JobResult:
        self.calls.append((user_id, request.message))
        if self.fail_with is not None:
            raise self.fail_with()
        words = request.message.split()
        usage = ai_pb2.Usage(
            prompt_tokens=len(words),
            completion_tokens=len(words) + 1,
            total_tokens=2 * len(words) + 1,
            model=request.model or "echo",
        )
        conversation_id = request.conversation_id or str(uuid.uuid5(uuid.NAMESPACE_OID, user_id))
        return JobResult(f"echo: {request.message}", usage, conversation_id)


@asynccontextmanager
async def running(runner: JobRunner) -> AsyncIterator[JobRunner]:
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


async def finished(jobs: Jobs, user_id: str, job_id: str, kit: Any) -> ai_pb2.Job:
    async def done() -> ai_pb2.Job | None:
        job = await jobs.get(user_id, job_id)
        return job if job.status in (SUCCEEDED, FAILED) else None

    result: ai_pb2.Job = await kit.eventually(done)
    return result


async def attempts(db: PostgresDatabase, job_id: str) -> int:
    return int(await db.pool.fetchval("SELECT attempts FROM ai_jobs WHERE id = $1", job_id))


async def test_submit_then_get_and_who_may_see_it(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    jobs = Jobs(store_db)
    job = await jobs.submit("alice", ai_pb2.ChatRequest(message="Summarise AAPL", mode="fast"))
    assert job.status == QUEUED
    assert uuid.UUID(job.job_id)
    assert job.created_at.seconds > 0
    assert not job.HasField("finished_at")

    got = await jobs.get("alice", job.job_id)
    assert got == job
    stored = await store_db.pool.fetchval("SELECT request FROM ai_jobs")
    assert ai_pb2.ChatRequest.FromString(stored).message == "Summarise AAPL"

    for other in ((jobs.get("bob", job.job_id)), jobs.get("alice", str(uuid.uuid4()))):
        error = await store_kit.failure(other)
        assert (error.code, error.detail) == ("not_found", "job not found")
    error = await store_kit.failure(jobs.get("alice", "not-a-uuid"))
    assert (error.code, error.detail) == ("validation", "job_id must be a UUID")


async def test_the_runner_runs_a_job_to_succeeded(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    jobs, model = Jobs(store_db), EchoModel()
    async with running(JobRunner(jobs, model, poll_s=0.05)):
        first = await jobs.submit("alice", ai_pb2.ChatRequest(message="one two three"))
        second = await jobs.submit("bob", ai_pb2.ChatRequest(message="hi", conversation_id="c1"))
        done = await finished(jobs, "alice", first.job_id, store_kit)
        other = await finished(jobs, "bob", second.job_id, store_kit)

    assert done.status == SUCCEEDED
    assert done.answer == "echo: one two three"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (3, 4)
    assert done.usage.model == "echo"
    assert done.conversation_id == str(uuid.uuid5(uuid.NAMESPACE_OID, "alice"))
    assert done.error == ""
    assert done.finished_at.ToDatetime() >= done.created_at.ToDatetime()
    assert (other.status, other.answer, other.conversation_id) == (SUCCEEDED, "echo: hi", "c1")
    assert sorted(model.calls) == [("alice", "one two three"), ("bob", "hi")]
    assert await attempts(store_db, first.job_id) == 1


async def test_a_failing_run_ends_failed_after_max_attempts(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    jobs = Jobs(store_db)
    crashing = EchoModel(lambda: RuntimeError("db password is hunter2"))
    busy = EchoModel(lambda: Unavailable("every model slot is busy"))
    for model, message in ((crashing, GENERIC_FAILURE), (busy, "every model slot is busy")):
        runner = JobRunner(jobs, model, poll_s=0.05, max_attempts=3, retry_backoff_s=0)
        async with running(runner):
            job = await jobs.submit("alice", ai_pb2.ChatRequest(message="x"))
            failed = await finished(jobs, "alice", job.job_id, store_kit)
        assert failed.status == FAILED
        assert failed.error == message  # the user never sees the internal exception
        assert failed.answer == ""
        assert len(model.calls) == 3
        assert await attempts(store_db, job.job_id) == 3


async def test_a_refused_request_fails_at_once(store_db: PostgresDatabase, store_kit: Any) -> None:
    jobs = Jobs(store_db)
    model = EchoModel(lambda: ValidationFailed("unknown mode 'telepathy'"))
    async with running(JobRunner(jobs, model, poll_s=0.05, retry_backoff_s=0)):
        job = await jobs.submit("alice", ai_pb2.ChatRequest(message="x", mode="telepathy"))
        failed = await finished(jobs, "alice", job.job_id, store_kit)
    assert (failed.status, failed.error) == (FAILED, "unknown mode 'telepathy'")
    assert len(model.calls) == 1


async def test_an_expired_lease_is_claimed_again(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    jobs = Jobs(store_db)
    job = await jobs.submit("alice", ai_pb2.ChatRequest(message="after a crash"))
    # A replica claims the job, then "crashes": it never renews nor finishes it.
    crashed = await jobs.claim(timedelta(seconds=1))
    assert crashed is not None
    assert str(crashed.job_id) == job.job_id
    assert (await jobs.get("alice", job.job_id)).status == RUNNING
    assert await jobs.claim(timedelta(seconds=1)) is None  # leased: nobody else takes it

    model = EchoModel()
    async with running(JobRunner(jobs, model, poll_s=0.05)):
        done = await finished(jobs, "alice", job.job_id, store_kit)
    assert (done.status, done.answer) == (SUCCEEDED, "echo: after a crash")
    assert await attempts(store_db, job.job_id) == 2
    # The crashed replica's late answer is refused: it no longer holds the lease.
    late = JobResult("stale", ai_pb2.Usage(), "")
    assert not await jobs.succeed(crashed, late)
    assert (await jobs.get("alice", job.job_id)).answer == "echo: after a crash"


async def test_a_job_whose_runners_keep_dying_ends_failed(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    jobs = Jobs(store_db)
    job = await jobs.submit("alice", ai_pb2.ChatRequest(message="poison"))
    for _ in range(2):  # two runners died holding it
        assert await jobs.claim(timedelta(milliseconds=1)) is not None
        await asyncio.sleep(0.01)
    model = EchoModel()
    async with running(JobRunner(jobs, model, poll_s=0.05, max_attempts=2)):
        failed = await finished(jobs, "alice", job.job_id, store_kit)
    assert (failed.status, failed.error) == (FAILED, GENERIC_FAILURE)
    assert model.calls == []


async def test_stopping_puts_a_running_job_back_in_the_queue(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    jobs = Jobs(store_db)
    started = asyncio.Event()

    async def slow(user_id: str, request: ai_pb2.ChatRequest) -> JobResult:
        started.set()
        await asyncio.Event().wait()  # until cancelled
        raise AssertionError("unreachable")

    runner = JobRunner(jobs, slow, poll_s=0.05)
    await runner.start()
    assert await runner.ready()
    job = await jobs.submit("alice", ai_pb2.ChatRequest(message="long"))
    await asyncio.wait_for(started.wait(), 20)
    await runner.stop()
    assert not await runner.ready()

    back = await jobs.get("alice", job.job_id)
    assert back.status == QUEUED
    assert await attempts(store_db, job.job_id) == 0  # the interrupted run does not count
    async with running(JobRunner(jobs, EchoModel(), poll_s=0.05)):
        done = await finished(jobs, "alice", job.job_id, store_kit)
    assert done.status == SUCCEEDED


async def test_a_submit_wakes_an_idle_runner(store_db: PostgresDatabase, store_kit: Any) -> None:
    """With a poll far longer than the wait, only the NOTIFY on submit can start the job."""
    jobs = Jobs(store_db)
    async with running(JobRunner(jobs, EchoModel(), poll_s=600)):
        await asyncio.sleep(0.2)  # the workers found nothing and sleep
        job = await jobs.submit("alice", ai_pb2.ChatRequest(message="now"))
        done = await finished(jobs, "alice", job.job_id, store_kit)
    assert done.status == SUCCEEDED
