"""The worker's API rules: who may submit which type, parameters validated per type, quotas
per plan, the idempotency key, reads scoped to the owner, cancel, the dead-letter list.

Methods take the unit of work (or a connection for reads) and plain arguments and return
records; they write through `uow.conn`, queue events with `uow.emit()` and never commit (the
boundary, grpc.py, does). Another user's job is NOT_FOUND, never FORBIDDEN: its existence is not
disclosed. Operators (the admin role, services) may read and cancel any job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from aether_common.errors import (
    Forbidden,
    NotFound,
    PreconditionFailed,
    RateLimited,
    ValidationFailed,
)
from aether_common.postgres import UnitOfWork
from aether_worker import events, repository
from aether_worker.callers import Caller, require_caller
from aether_worker.config import WorkerSettings
from aether_worker.handler import JobType
from aether_worker.metrics import JOBS_REPLAYED, JOBS_SUBMITTED
from aether_worker.records import Job, Page, Status
from aether_worker.registry import JobRegistry

STATUSES = tuple(s.value for s in Status)
MAX_KEY = 200
MAX_PRIORITY = 100


@dataclass(frozen=True, slots=True)
class Submission:
    """A submit request, checked: its type, validated params, the owner it is for."""

    job_type: JobType
    params: BaseModel
    owner_id: str
    priority: int
    idempotency_key: str


class WorkerService:
    def __init__(self, settings: WorkerSettings, registry: JobRegistry) -> None:
        self._s = settings
        self._registry = registry
        self._prefix = settings.topic_prefix
        self.retention_s = settings.retention_days * 86_400

    def caller(self) -> Caller:
        return require_caller(admin_role=self._s.admin_role)

    def limit(self, requested: int) -> int:
        if requested < 0 or requested > self._s.max_limit:
            raise ValidationFailed(
                f"limit: 1 to {self._s.max_limit} (0: {self._s.default_limit})",
                field_errors={"limit": "out of range"},
            )
        return requested or self._s.default_limit

    # -- submitting ------------------------------------------------------------------------------
    def check(
        self,
        caller: Caller,
        *,
        type_name: str,
        params_json: str,
        priority: int,
        idempotency_key: str,
        on_behalf_of: str,
    ) -> Submission:
        """The request checked before any transaction: type, permission, params, fields."""
        job_type = self._registry.get(type_name)
        if job_type is None:
            known = ", ".join(self._registry.names())
            raise ValidationFailed(
                f"type: unknown job type {type_name!r} (known: {known})",
                field_errors={"type": "unknown job type"},
            )
        if not job_type.user_may_submit and not caller.operator:
            raise Forbidden(
                f"only operators may submit {type_name!r} jobs", code="job_type_not_allowed"
            )
        if on_behalf_of and not caller.service:
            raise Forbidden(
                "on_behalf_of: only a service token may submit for another user",
                code="on_behalf_of_not_allowed",
            )
        if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
            raise ValidationFailed(
                f"priority: {-MAX_PRIORITY} to {MAX_PRIORITY}",
                field_errors={"priority": "out of range"},
            )
        if len(idempotency_key) > MAX_KEY:
            raise ValidationFailed(
                f"idempotency_key: at most {MAX_KEY} characters",
                field_errors={"idempotency_key": "too long"},
            )
        if len(on_behalf_of) > MAX_KEY:
            raise ValidationFailed(
                f"on_behalf_of: at most {MAX_KEY} characters",
                field_errors={"on_behalf_of": "too long"},
            )
        params = _params(job_type, params_json)
        return Submission(
            job_type=job_type,
            params=params,
            owner_id=on_behalf_of or caller.user_id,
            priority=priority,
            idempotency_key=idempotency_key,
        )

    async def submit(self, uow: UnitOfWork, caller: Caller, sub: Submission) -> tuple[Job, bool]:
        """The new job (queued, its work message in the outbox) and True; or the job this
        owner's idempotency key made before and False."""
        conn = uow.conn
        await repository.lock_owner(conn, sub.owner_id)
        if sub.idempotency_key:
            existing = await repository.job_by_key(conn, sub.owner_id, sub.idempotency_key)
            if existing is not None:
                return existing, False
        await self._within_quota(conn, caller, sub)
        job = await repository.insert_job(
            conn,
            type_=sub.job_type.name,
            params=sub.params.model_dump(mode="json"),
            owner_id=sub.owner_id,
            submitted_by=caller.user_id,
            priority=sub.priority,
            max_attempts=sub.job_type.max_attempts,
            idempotency_key=sub.idempotency_key,
        )
        await uow.emit(events.status_changed(job, "", self._prefix), events.work(job, self._prefix))
        JOBS_SUBMITTED.labels(job.type).inc()
        return job, True

    async def _within_quota(self, conn: Any, caller: Caller, sub: Submission) -> None:
        plan = "admin" if caller.operator else (caller.plan or "free")
        runs = sub.job_type.runs(sub.params)
        sweep = self._s.sweep_quota(caller.plan, operator=caller.operator)
        if runs > sweep:
            raise RateLimited(
                f"sweep size: the {plan} plan allows {sweep} runs per job and this one asks"
                f" for {runs}",
                code="sweep_quota_exceeded",
                metadata={"limit": str(sweep), "runs": str(runs), "plan": plan},
            )
        concurrent = self._s.concurrent_quota(caller.plan, operator=caller.operator)
        active = await repository.count_active(conn, sub.owner_id)
        if active >= concurrent:
            raise RateLimited(
                f"concurrent jobs: the {plan} plan allows {concurrent} queued or running jobs"
                f" and you have {active}; wait for one to finish or cancel one",
                code="concurrent_jobs_quota_exceeded",
                metadata={"limit": str(concurrent), "active": str(active), "plan": plan},
            )

    # -- reading ---------------------------------------------------------------------------------
    async def get(self, conn: Any, caller: Caller, job_id: str, *, lock: bool = False) -> Job:
        id_ = repository.parse_id(job_id)
        job = None if id_ is None else await repository.get_job(conn, id_, lock=lock)
        if job is None or not (caller.operator or job.owner_id == caller.user_id):
            raise NotFound(f"no job {job_id!r}", code="job_not_found")
        return job

    async def list_jobs(
        self, conn: Any, caller: Caller, *, status: str, type_name: str, limit: int, cursor: str
    ) -> Page[Job]:
        if status and status not in STATUSES:
            raise ValidationFailed(
                f"status: one of {', '.join(STATUSES)}", field_errors={"status": "unknown"}
            )
        return await repository.list_jobs(
            conn,
            caller.user_id,
            status=status,
            type_=type_name,
            limit=self.limit(limit),
            cursor=cursor,
        )

    # -- cancelling ------------------------------------------------------------------------------
    async def cancel(self, uow: UnitOfWork, caller: Caller, job_id: str) -> Job:
        """queued -> cancelled now; running -> cancel_requested (cancelled at its next
        checkpoint); asking again changes nothing; a finished job is FAILED_PRECONDITION."""
        job = await self.get(uow.conn, caller, job_id, lock=True)
        if job.status is Status.QUEUED:
            cancelled = await repository.cancel_queued(
                uow.conn, job.id, retention_s=self.retention_s
            )
            assert cancelled is not None  # the row is locked and queued
            await uow.emit(events.status_changed(cancelled, job.status.value, self._prefix))
            return cancelled
        if job.status is Status.RUNNING:
            if job.cancel_requested:
                return job
            requested = await repository.request_cancel(uow.conn, job.id)
            assert requested is not None
            return requested
        raise PreconditionFailed(f"the job is already {job.status.value}", code="job_finished")

    # -- the dead-letter list (operators) --------------------------------------------------------
    def _operator(self, caller: Caller) -> None:
        if not caller.operator:
            raise Forbidden("operators only (the admin role or a service token)")

    async def list_dead(
        self, conn: Any, caller: Caller, *, type_name: str, limit: int, cursor: str
    ) -> Page[Job]:
        self._operator(caller)
        return await repository.list_dead(
            conn, type_=type_name, limit=self.limit(limit), cursor=cursor
        )

    async def replay(self, uow: UnitOfWork, caller: Caller, job_id: str) -> Job:
        """A dead job queued again with a fresh attempt budget."""
        self._operator(caller)
        job = await self.get(uow.conn, caller, job_id, lock=True)
        if not job.dead:
            raise PreconditionFailed(
                f"the job is {job.status.value}, not in the dead-letter list", code="job_not_dead"
            )
        replayed = await repository.replay(uow.conn, job.id)
        assert replayed is not None
        await uow.emit(
            events.status_changed(replayed, job.status.value, self._prefix),
            events.work(replayed, self._prefix),
        )
        JOBS_REPLAYED.labels(job.type).inc()
        return replayed


def _params(job_type: JobType, params_json: str) -> BaseModel:
    """The params validated by the type's model; each bad field named as `params.<path>`."""
    try:
        raw = orjson.loads(params_json or "{}")
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(
            f"params_json: not JSON ({exc})", field_errors={"params_json": "not JSON"}
        ) from None
    if not isinstance(raw, dict):
        raise ValidationFailed(
            "params_json: must be a JSON object", field_errors={"params_json": "not an object"}
        )
    try:
        return job_type.params.model_validate(raw)
    except PydanticError as exc:
        fields = {
            ".".join(["params", *(str(part) for part in error["loc"])]): error["msg"]
            for error in exc.errors()
        }
        listed = "; ".join(f"{field}: {msg}" for field, msg in fields.items())
        raise ValidationFailed(
            f"invalid params for {job_type.name!r}: {listed}", field_errors=fields
        ) from None
