"""The worker's protobuf messages <-> the JSON of `/api/jobs/*` and of the root `/jobs/{id}`.
Params and results travel as JSON text in the proto; clients get them parsed."""

from __future__ import annotations

from typing import Any

import orjson

from aether.worker.v1 import worker_pb2
from aether_gateway.ai.convert import timestamp
from aether_gateway.ai.stream import UpstreamProtocolError
from aether_gateway.jobs.schemas import JobIn


def submit_request(body: JobIn) -> worker_pb2.SubmitJobRequest:
    return worker_pb2.SubmitJobRequest(
        type=body.type,
        params_json=orjson.dumps(body.params).decode(),
        priority=body.priority,
        idempotency_key=body.idempotency_key or "",
    )


def parsed_json(text: str, what: str) -> Any:
    """A JSON field of a job: None when empty; a 502 when the worker sent something else."""
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError(f"the worker sent a job whose {what} is not JSON") from exc


def error(j: worker_pb2.Job) -> dict[str, str] | None:
    if not j.HasField("error") or not (j.error.code or j.error.message):
        return None
    return {"code": j.error.code, "message": j.error.message}


def artifact(a: worker_pb2.Artifact) -> dict[str, Any]:
    return {
        "name": a.name,
        "content_type": a.content_type,
        "size": a.size,
        "url": a.url,
        "url_expires_at": timestamp(a, "url_expires_at"),
    }


def job(j: worker_pb2.Job) -> dict[str, Any]:
    return {
        "id": j.id,
        "type": j.type,
        "params": parsed_json(j.params_json, "params") or {},
        "owner_id": j.owner_id,
        "priority": j.priority,
        "status": j.status,
        "progress": j.progress,
        "progress_message": j.progress_message,
        "attempts": j.attempts,
        "max_attempts": j.max_attempts,
        "result": parsed_json(j.result_json, "result"),
        "artifacts": [artifact(a) for a in j.artifacts],
        "error": error(j),
        "cancel_requested": j.cancel_requested,
        "retry_at": timestamp(j, "retry_at"),
        "created_at": timestamp(j, "created_at"),
        "started_at": timestamp(j, "started_at"),
        "finished_at": timestamp(j, "finished_at"),
        "updated_at": timestamp(j, "updated_at"),
        "expires_at": timestamp(j, "expires_at"),
    }


def document_job(j: worker_pb2.Job) -> dict[str, Any]:
    """`GET /jobs/{id}`, the platform documents' shape."""
    return {
        "job_id": j.id,
        "status": j.status,
        "progress": j.progress,
        "result": parsed_json(j.result_json, "result"),
        "error": error(j),
        "created_at": timestamp(j, "created_at"),
        "finished_at": timestamp(j, "finished_at"),
    }
