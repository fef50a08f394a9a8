"""A job's life after it was accepted: claimed, then completed, cancelled, retried or dead;
taken up again when its lease ran out; its work message sent when a retry comes due.

Each function takes the unit of work the boundary opened (the runner's, the scheduler's) and
writes the status event with the change. Writes of an attempt are fenced by its token
(repository.py); a write that finds the job no longer held returns None and changes nothing.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from aether_common.postgres import UnitOfWork
from aether_worker import events, repository
from aether_worker.config import WorkerSettings
from aether_worker.metrics import ATTEMPTS, LEASES_EXPIRED
from aether_worker.records import Claim, Job, Status


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: retry n waits a random time in
    [0, min(cap_s, base_s * 2^(n-1))], so retries of many jobs failing together spread out."""

    base_s: float
    cap_s: float
    rand: Callable[[], float] = random.random

    def delay(self, retry: int) -> float:
        return float(self.rand() * min(self.cap_s, self.base_s * 2 ** max(0, retry - 1)))


class Transitions:
    def __init__(self, settings: WorkerSettings, *, backoff: Backoff | None = None) -> None:
        self._s = settings
        self._prefix = settings.topic_prefix
        self.retention_s = settings.retention_days * 86_400
        self.backoff = backoff or Backoff(settings.retry_backoff_s, settings.retry_max_backoff_s)

    async def _changed(self, uow: UnitOfWork, job: Job, previous: Status) -> Job:
        await uow.emit(events.status_changed(job, previous.value, self._prefix))
        return job

    # -- an attempt ------------------------------------------------------------------------------
    async def claim(self, uow: UnitOfWork, job_id: uuid.UUID, *, worker: str) -> Claim | None:
        token = uuid.uuid4()
        lease_s = self._s.lease_s
        job = await repository.claim(uow.conn, job_id, token, worker=worker, lease_s=lease_s)
        if job is None:
            return None
        await self._changed(uow, job, Status.QUEUED)
        return Claim(job, token)

    async def complete(
        self, uow: UnitOfWork, claim: Claim, result: dict[str, object]
    ) -> Job | None:
        job = await repository.settle(
            uow.conn,
            claim.job.id,
            claim.token,
            status=Status.COMPLETED,
            result=result,
            retention_s=self.retention_s,
        )
        return None if job is None else await self._outcome(uow, job, "completed")

    async def cancelled(self, uow: UnitOfWork, claim: Claim) -> Job | None:
        job = await repository.settle(
            uow.conn,
            claim.job.id,
            claim.token,
            status=Status.CANCELLED,
            error=("cancelled", "cancelled at a checkpoint"),
            retention_s=self.retention_s,
        )
        return None if job is None else await self._outcome(uow, job, "cancelled")

    async def failed(
        self, uow: UnitOfWork, claim: Claim, code: str, message: str, *, retryable: bool
    ) -> Job | None:
        """Queued again after a backoff while attempts are left and the failure is retryable;
        else failed for good and dead-listed (ListDeadJobs)."""
        attempts, limit = claim.job.attempts, claim.job.max_attempts
        if retryable and attempts < limit:
            job = await repository.settle(
                uow.conn,
                claim.job.id,
                claim.token,
                status=Status.QUEUED,
                error=(code, message),
                retry_in_s=self.backoff.delay(attempts),
                retention_s=self.retention_s,
            )
            return None if job is None else await self._outcome(uow, job, "retried")
        job = await repository.settle(
            uow.conn,
            claim.job.id,
            claim.token,
            status=Status.FAILED,
            error=(code, message),
            dead=True,
            retention_s=self.retention_s,
        )
        return None if job is None else await self._outcome(uow, job, "dead")

    async def release(self, uow: UnitOfWork, claim: Claim) -> Job | None:
        """Handed back unfinished by a stopping worker: queued again at once, uncounted."""
        job = await repository.release(uow.conn, claim.job.id, claim.token)
        if job is None:
            return None
        await uow.emit(events.work(job, self._prefix))
        return await self._outcome(uow, job, "released")

    async def _outcome(self, uow: UnitOfWork, job: Job, outcome: str) -> Job:
        ATTEMPTS.labels(job.type, outcome).inc()
        return await self._changed(uow, job, Status.RUNNING)

    # -- the scheduler ---------------------------------------------------------------------------
    async def expire_leases(self, uow: UnitOfWork, *, limit: int) -> int:
        """Attempts whose worker stopped renewing (killed, hung): the job is queued again as a
        new attempt (due at once), or cancelled if that was asked, or dead if none is left."""
        expired = await repository.expired_leases(uow.conn, limit)
        for job, token in expired:
            LEASES_EXPIRED.labels(job.type).inc()
            claim = Claim(job, token)
            if job.cancel_requested:
                await self.cancelled(uow, claim)
                continue
            message = "the worker running the attempt stopped renewing its lease"
            if job.attempts < job.max_attempts:
                settled = await repository.settle(
                    uow.conn,
                    job.id,
                    token,
                    status=Status.QUEUED,
                    error=("lease_expired", message),
                    retry_in_s=0.0,
                    retention_s=self.retention_s,
                )
                if settled is not None:
                    await self._outcome(uow, settled, "retried")
            else:
                await self.failed(uow, claim, "lease_expired", message, retryable=False)
        return len(expired)

    async def dispatch_due(self, uow: UnitOfWork, *, limit: int) -> int:
        """Work messages for retries that came due and for queued jobs whose message was lost."""
        due = await repository.due_for_dispatch(
            uow.conn, requeue_after_s=self._s.requeue_after_s, limit=limit
        )
        if due:
            await uow.emit(*(events.work(job, self._prefix) for job in due))
        return len(due)
