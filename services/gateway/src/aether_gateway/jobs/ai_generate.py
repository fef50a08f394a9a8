"""The `ai.generate` job as the gateway sees it: submitted from a `POST /api/ai/chat` body
(`/generate?async=true`, `/api/ai/generate?async=true`), its result the JSON that
`POST /api/ai/chat` answers (docs/jobs-api.md, "ai.generate"), and its mapping onto the old
`/api/ai/jobs/{id}` answer for clients written before the worker."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from aether.worker.v1 import worker_pb2
from aether_common.access_tokens import AccessToken
from aether_common.errors import NotFound
from aether_gateway.ai.convert import timestamp
from aether_gateway.ai.schemas import ChatIn, UsageOut
from aether_gateway.ai.stream import UpstreamProtocolError
from aether_gateway.jobs.client import WorkerClient
from aether_gateway.jobs.convert import parsed_json

TYPE = "ai.generate"

# The worker's statuses under the names ai's own jobs used (ai_pb2.JobStatus). A cancelled job
# is "failed" to an old client: its statuses have no other end that is not success.
LEGACY_STATUS = {
    "queued": "queued",
    "running": "running",
    "completed": "succeeded",
    "failed": "failed",
    "cancelled": "failed",
}


def params(body: ChatIn) -> dict[str, Any]:
    """The job's params: the chat body as validated here (unset optional fields left out)."""
    return body.model_dump(mode="json", exclude_none=True)


async def submit(worker: WorkerClient, body: ChatIn, caller: AccessToken) -> worker_pb2.Job:
    request = worker_pb2.SubmitJobRequest(
        type=TYPE, params_json=orjson.dumps(params(body)).decode()
    )
    answer = await worker.call(worker.stub.SubmitJob, request, token=caller.raw)
    return answer.job


async def find(worker: WorkerClient, job_id: str, caller: AccessToken) -> worker_pb2.Job | None:
    """The caller's `ai.generate` job of that id at the worker; None when it has none (NOT_FOUND,
    or a job of another type). Any other failure (the worker away) raises."""
    request = worker_pb2.GetJobRequest(id=job_id)
    try:
        answer = await worker.call(worker.stub.GetJob, request, token=caller.raw)
    except NotFound:
        return None
    return answer.job if answer.job.type == TYPE else None


def legacy_status(status: str) -> str:
    return LEGACY_STATUS.get(status, "unknown")


def legacy_job(j: worker_pb2.Job) -> dict[str, Any]:
    """A worker job in the shape of the old `GET /api/ai/jobs/{id}` (ai.schemas.JobOut)."""
    status = legacy_status(j.status)
    result = parsed_json(j.result_json, "result") if status == "succeeded" else None
    answer: dict[str, Any] = result if isinstance(result, dict) else {}
    error = None
    if status == "failed":
        error = j.error.message or j.error.code or j.status
    return {
        "job_id": j.id,
        "status": status,
        "created_at": timestamp(j, "created_at"),
        "finished_at": timestamp(j, "finished_at"),
        "answer": answer.get("answer") or None,
        "usage": _usage(answer.get("usage")),
        "conversation_id": answer.get("conversation_id") or None,
        "error": error,
    }


def _usage(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        return UsageOut.model_validate(value).model_dump()
    except ValidationError as exc:
        raise UpstreamProtocolError("the ai.generate result's usage is not ai's usage") from exc
