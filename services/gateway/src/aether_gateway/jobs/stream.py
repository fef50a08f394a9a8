"""`GET /api/jobs/{id}/events`: a job's WatchJob stream as public events, written as Server-Sent
Events by ai/sse.py's EventStreamResponse (first event awaited before any byte, so an unknown id
is a plain 404; comment lines while the job is quiet; the client leaving cancels the call).

One `job` event (data: the job, as `GET /api/jobs/{id}` answers it) per change; the stream ends
after the event with a final status. The iterator must be closed (the SSE response does) for
the upstream call to be cancelled.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from aether.worker.v1 import worker_pb2
from aether_common.errors import Unavailable
from aether_gateway.ai.convert import Event
from aether_gateway.jobs import convert
from aether_gateway.jobs.client import WorkerClient
from aether_gateway.jobs.schemas import FINAL_STATUSES, JobOut

RECONNECT_AFTER_S = 1


async def job_events(
    worker: WorkerClient, job_id: str, *, token: str
) -> AsyncGenerator[Event, None]:
    """The job now, then on every change; raises the typed error of a failed call."""
    responses = worker.stream(
        worker.stub.WatchJob, worker_pb2.WatchJobRequest(id=job_id), token=token
    )
    try:
        async for message in responses:
            job = JobOut.model_validate(convert.job(message.job)).model_dump()
            yield "job", job
            if job["status"] in FINAL_STATUSES:
                return
        # A worker replica going away ends its streams early: the client watches again.
        raise Unavailable(
            "the worker stopped watching the job before it finished; watch again",
            code="watch_interrupted",
            retry_after=RECONNECT_AFTER_S,
        )
    finally:
        # Cancels the call when it is still running.
        await responses.aclose()
