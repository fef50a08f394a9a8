"""Async generation: jobs stored in PostgreSQL and run in the background by any replica.

`Jobs` is the store (submit, get, and the lease operations the runner uses). `JobRunner` is the
Component that runs them: each of its workers claims the oldest runnable job with
`FOR UPDATE SKIP LOCKED` (replicas never wait on each other), holds a lease it renews while the
job runs, and finishes the job only while it still holds that lease. A replica that crashes
stops renewing; once the lease expires another replica claims the job again (a new attempt).

A run that fails with a transient error (anything but a 4xx AetherError) is retried after a
backoff, up to `max_attempts`; then, or at once for a 4xx, the job ends FAILED with a message
safe to show the user (the AetherError's detail, else a generic one); the exception is logged.
Stopping cancels running jobs and puts them back in the queue without counting the attempt.
A NOTIFY on submit wakes idle workers at once; polling every `poll_s` is the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from aether.ai.v1 import ai_pb2
from aether_ai import repository
from aether_common.errors import (
    AetherError,
    InternalError,
    NotFound,
    RateLimited,
    Timeout,
    Unavailable,
    ValidationFailed,
)
from aether_common.logging import get_logger
from aether_common.postgres import PostgresDatabase

log = get_logger(__name__)

NOT_FOUND = "job not found"
GENERIC_FAILURE = "the answer could not be generated; please try again later"
# Errors worth another attempt; any other AetherError is the request's own fault.
TRANSIENT: tuple[type[AetherError], ...] = (Unavailable, Timeout, RateLimited, InternalError)

_STATUS = {
    "queued": ai_pb2.JOB_STATUS_QUEUED,
    "running": ai_pb2.JOB_STATUS_RUNNING,
    "succeeded": ai_pb2.JOB_STATUS_SUCCEEDED,
    "failed": ai_pb2.JOB_STATUS_FAILED,
}


@dataclass(frozen=True, slots=True)
class JobResult:
    answer: str
    usage: ai_pb2.Usage
    conversation_id: str


JobRun = Callable[[str, ai_pb2.ChatRequest], Awaitable[JobResult]]  # (user_id, request)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job leased to one runner: only the holder of `lease_token` may finish it."""

    job_id: uuid.UUID
    user_id: str
    request: ai_pb2.ChatRequest
    attempt: int  # 1 for the first run
    lease_token: uuid.UUID


def parse_job_id(job_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(job_id)
    except ValueError:
        raise ValidationFailed(
            "job_id must be a UUID", field_errors={"job_id": "not a UUID"}
        ) from None


class Jobs:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def submit(self, user_id: str, request: ai_pb2.ChatRequest) -> ai_pb2.Job:
        """Stores the job QUEUED; a runner on any replica picks it up."""
        row = await self.db.transaction(
            lambda uow: repository.insert_job(
                uow.conn, uuid.uuid4(), user_id, request.SerializeToString()
            )
        )
        return _job(row)

    async def get(self, user_id: str, job_id: str) -> ai_pb2.Job:
        key = parse_job_id(job_id)
        async with self.db.connection() as conn:
            row = await repository.find_job(conn, user_id, key)
        if row is None:
            raise NotFound(NOT_FOUND)
        return _job(row)

    # -- the runner's side ----------------------------------------------------------------------
    async def claim(self, lease: timedelta) -> ClaimedJob | None:
        token = uuid.uuid4()
        row = await self.db.transaction(lambda uow: repository.claim_job(uow.conn, token, lease))
        if row is None:
            return None
        return ClaimedJob(
            job_id=row["id"],
            user_id=row["user_id"],
            request=ai_pb2.ChatRequest.FromString(row["request"]),
            attempt=row["attempts"],
            lease_token=token,
        )

    async def extend(self, job: ClaimedJob, lease: timedelta) -> bool:
        async with self.db.connection() as conn:
            return await repository.extend_lease(conn, job.job_id, job.lease_token, lease)

    async def succeed(self, job: ClaimedJob, result: JobResult) -> bool:
        async with self.db.connection() as conn:
            return await repository.succeed_job(
                conn,
                job.job_id,
                job.lease_token,
                answer=result.answer,
                usage=result.usage.SerializeToString(),
                conversation_id=result.conversation_id,
            )

    async def fail(self, job: ClaimedJob, error: str) -> bool:
        async with self.db.connection() as conn:
            return await repository.fail_job(conn, job.job_id, job.lease_token, error)

    async def retry(self, job: ClaimedJob, delay: timedelta) -> bool:
        async with self.db.connection() as conn:
            return await repository.retry_job(conn, job.job_id, job.lease_token, delay)

    async def release(self, job: ClaimedJob) -> bool:
        async with self.db.connection() as conn:
            return await repository.release_job(conn, job.job_id, job.lease_token)


class JobRunner:
    """Component: `concurrency` workers running the stored jobs of every replica."""

    name = "ai-jobs"

    def __init__(
        self,
        jobs: Jobs,
        run: JobRun,
        *,
        concurrency: int = 2,
        poll_s: float = 0.5,
        lease_s: float = 300.0,
        max_attempts: int = 3,
        retry_backoff_s: float = 2.0,
    ) -> None:
        if concurrency < 1 or max_attempts < 1 or poll_s <= 0 or lease_s <= 0:
            raise ValueError("concurrency, max_attempts, poll_s and lease_s must be positive")
        self._jobs = jobs
        self._run = run
        self._concurrency = concurrency
        self._poll_s = poll_s
        self._lease = timedelta(seconds=lease_s)
        self._max_attempts = max_attempts
        self._retry_backoff_s = retry_backoff_s
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._listener: Any = None  # the asyncpg connection that LISTENs, when it could connect

    async def start(self) -> None:
        await self._listen()
        self._workers = [
            asyncio.create_task(self._work(), name=f"{self.name}-{n}")
            for n in range(self._concurrency)
        ]

    async def stop(self) -> None:
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()  # a running job goes back to the queue (see _execute)
        await asyncio.gather(*workers, return_exceptions=True)
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                await listener.close(timeout=2)
            except Exception:
                listener.terminate()

    async def ready(self) -> bool:
        return bool(self._workers) and not any(task.done() for task in self._workers)

    async def _listen(self) -> None:
        try:
            self._listener = await asyncpg.connect(self._jobs.db.dsn)
            await self._listener.add_listener(repository.JOBS_CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cannot LISTEN for new jobs; polling only", error=repr(exc))
            self._listener = None

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _work(self) -> None:
        while True:
            self._wake.clear()  # a submit from now on wakes the wait below
            try:
                job = await self._jobs.claim(self._lease)
            except Exception as exc:  # the database away: keep trying at the poll pace
                log.warning("cannot claim a job", error=repr(exc))
                job = None
            if job is None:
                # Not asyncio.wait_for: on 3.11 it can swallow the cancel of stop() when the
                # wake comes at the same time, and this loop would never end.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_s):
                        await self._wake.wait()
                continue
            try:
                await self._execute(job)
            except Exception as exc:  # could not store the outcome: the lease runs out, and
                # the job is claimed again as a new attempt
                log.warning("cannot store a job's outcome", job_id=str(job.job_id), error=repr(exc))

    async def _execute(self, job: ClaimedJob) -> None:
        if job.attempt > self._max_attempts:  # its runners kept dying (leases expired)
            log.error("job abandoned after repeated lost leases", job_id=str(job.job_id))
            await self._jobs.fail(job, GENERIC_FAILURE)
            return
        heartbeat = asyncio.create_task(self._renew(job), name=f"{self.name}-lease")
        try:
            result = await self._run(job.user_id, job.request)
        except asyncio.CancelledError:
            try:
                await self._jobs.release(job)  # stopping: another runner starts it afresh
            except Exception as exc:  # then its lease runs out instead
                log.warning("cannot release a job", job_id=str(job.job_id), error=repr(exc))
            raise
        except Exception as exc:
            await self._failed(job, exc)
        else:
            if not await self._jobs.succeed(job, result):
                log.warning("job finished after its lease was lost", job_id=str(job.job_id))
        finally:
            heartbeat.cancel()

    async def _failed(self, job: ClaimedJob, exc: Exception) -> None:
        permanent = isinstance(exc, AetherError) and not isinstance(exc, TRANSIENT)
        log.warning(
            "job attempt failed",
            job_id=str(job.job_id),
            attempt=job.attempt,
            error=repr(exc),
            exc_info=not isinstance(exc, AetherError),
        )
        if permanent or job.attempt >= self._max_attempts:
            message = exc.detail if isinstance(exc, AetherError) else GENERIC_FAILURE
            await self._jobs.fail(job, message)
            return
        delay = self._retry_backoff_s * 2 ** (job.attempt - 1)
        await self._jobs.retry(job, timedelta(seconds=delay))

    async def _renew(self, job: ClaimedJob) -> None:
        """Keeps the lease while the job runs, so no other replica takes it over."""
        interval = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self._jobs.extend(job, self._lease):
                    log.warning("job lease lost", job_id=str(job.job_id))
                    return
            except Exception as exc:  # retried at the next interval, before the lease ends
                log.warning("cannot renew a job lease", job_id=str(job.job_id), error=repr(exc))


def _job(row: Any) -> ai_pb2.Job:
    job = ai_pb2.Job(
        job_id=str(row["id"]),
        status=_STATUS[row["status"]],
        created_at=_timestamp(row["created_at"]),
        answer=row["answer"],
        conversation_id=row["conversation_id"],
        error=row["error"],
    )
    if row["finished_at"] is not None:
        job.finished_at.CopyFrom(_timestamp(row["finished_at"]))
    if row["usage"] is not None:
        job.usage.ParseFromString(row["usage"])
    return job


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp
