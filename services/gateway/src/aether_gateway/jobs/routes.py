"""`/api/jobs/*`: each route calls one WorkerService RPC with the caller's token; the worker's
errors keep their meaning (400 naming a bad parameter, 403 for a type the caller may not submit,
404 for a job that is not the caller's, 429 naming the plan's quota, 503 + Retry-After when the
worker is away), except that cancelling a finished job is a 409. Admin routes need the admin
role here, and the worker checks again."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from aether.worker.v1 import worker_pb2
from aether_common.access_tokens import AccessToken
from aether_common.errors import Conflict, PreconditionFailed
from aether_gateway.ai.sse import MEDIA_TYPE, EventStreamResponse
from aether_gateway.deps import Caller, RequireRole, Resources, resources_of
from aether_gateway.jobs import convert
from aether_gateway.jobs.client import WorkerClient, WorkerNotConfigured
from aether_gateway.jobs.schemas import JOB_ID_PATTERN, JobIn, JobOut, JobsOut, JobType, Status
from aether_gateway.jobs.stream import job_events

ADMIN_ROLE = "admin"
# The 409 of a cancel when the worker named no reason (a finished job is its only refusal).
JOB_FINISHED = "job_finished"

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
# Included before `router`: its fixed path (/dead) must win over `/{job_id}`.
admin = APIRouter(prefix="/api/jobs", tags=["jobs"])


async def get_worker(request: Request) -> WorkerClient:
    return worker_of(request)


def worker_of(request: Request) -> WorkerClient:
    worker = resources_of(request).worker
    if worker is None:
        raise WorkerNotConfigured()
    return worker


Worker = Annotated[WorkerClient, Depends(get_worker)]
Admin = Annotated[AccessToken, Depends(RequireRole(ADMIN_ROLE))]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str, Query(max_length=512, description="next_cursor of the previous page")]

EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `job` (the job) on every change, ending after the "
        "final status; `error` (the error JSON) if the watch fails midway",
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}


def job_out(job: worker_pb2.Job) -> JobOut:
    return JobOut.model_validate(convert.job(job))


def jobs_out(jobs: Iterable[worker_pb2.Job], next_cursor: str) -> JobsOut:
    return JobsOut(jobs=[job_out(j) for j in jobs], next_cursor=next_cursor or None)


@router.post(
    "",
    status_code=202,
    summary="Submit a job (SubmitJob): 202 with the job, or 200 when the idempotency key "
    "matched an existing job",
    responses={200: {"model": JobOut, "description": "the job the idempotency key created"}},
)
async def submit(body: JobIn, caller: Caller, worker: Worker, response: Response) -> JobOut:
    request = convert.submit_request(body)
    answer = await worker.call(worker.stub.SubmitJob, request, token=caller.raw)
    if not answer.created:
        response.status_code = 200
    response.headers["Location"] = f"/api/jobs/{answer.job.id}"
    return job_out(answer.job)


@router.get("", summary="The caller's jobs, newest first (ListJobs)")
async def list_jobs(
    caller: Caller,
    worker: Worker,
    status: Status | None = None,
    type: Annotated[JobType | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = "",
) -> JobsOut:
    request = worker_pb2.ListJobsRequest(
        status=status or "", type=type or "", limit=limit, cursor=cursor
    )
    answer = await worker.call(worker.stub.ListJobs, request, token=caller.raw)
    return jobs_out(answer.jobs, answer.next_cursor)


# -- admin (fixed paths first) -------------------------------------------------------------------
@admin.get("/dead", summary="Admin: the dead-letter jobs, newest first (ListDeadJobs)")
async def dead_jobs(
    caller: Admin,
    worker: Worker,
    type: Annotated[JobType | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = "",
) -> JobsOut:
    request = worker_pb2.ListDeadJobsRequest(type=type or "", limit=limit, cursor=cursor)
    answer = await worker.call(worker.stub.ListDeadJobs, request, token=caller.raw)
    return jobs_out(answer.jobs, answer.next_cursor)


@admin.post(
    "/{job_id}/replay",
    status_code=202,
    summary="Admin: queue a dead job again with a fresh attempt budget (ReplayDeadJob)",
)
async def replay(job_id: JobId, caller: Admin, worker: Worker) -> JobOut:
    request = worker_pb2.ReplayDeadJobRequest(id=job_id)
    answer = await worker.call(worker.stub.ReplayDeadJob, request, token=caller.raw)
    return job_out(answer.job)


# -- one job -------------------------------------------------------------------------------------
@router.get("/{job_id}", summary="A job of the caller's (GetJob)")
async def get(job_id: JobId, caller: Caller, worker: Worker) -> JobOut:
    request = worker_pb2.GetJobRequest(id=job_id)
    return job_out((await worker.call(worker.stub.GetJob, request, token=caller.raw)).job)


@router.delete(
    "/{job_id}",
    status_code=202,
    summary="Cancel a job (CancelJob): queued ones at once, running ones at their next "
    "checkpoint (`cancel_requested`); 409 when it already finished",
)
async def cancel(job_id: JobId, caller: Caller, worker: Worker) -> JobOut:
    request = worker_pb2.CancelJobRequest(id=job_id)
    try:
        answer = await worker.call(worker.stub.CancelJob, request, token=caller.raw)
    except PreconditionFailed as error:
        # The job's state, not the request, is in the way: a conflict for REST clients.
        code = JOB_FINISHED if error.error_code == PreconditionFailed.code else error.error_code
        raise Conflict(error.detail, code=code, metadata=error.metadata) from error
    return job_out(answer.job)


@router.get(
    "/{job_id}/events",
    summary="A job's progress as Server-Sent Events (WatchJob)",
    response_class=Response,
    responses=EVENTS_RESPONSES,
)
async def events(job_id: JobId, caller: Caller, worker: Worker, resources: Resources) -> Any:
    stream = job_events(worker, job_id, token=caller.raw)
    return EventStreamResponse(
        stream, keepalive_s=resources.settings.worker_sse_keepalive_s, name="jobs"
    )
