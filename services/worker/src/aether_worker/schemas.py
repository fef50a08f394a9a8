"""Protobuf <-> the worker's records (worker.proto's Job, the event payloads)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from aether.worker.v1 import worker_pb2
from aether_worker.records import Job


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def job_pb(job: Job, artifacts: Sequence[worker_pb2.Artifact] = ()) -> worker_pb2.Job:
    """`artifacts`: the job's artifacts with signed URLs (artifacts.py); events carry none."""
    message = worker_pb2.Job(
        id=str(job.id),
        type=job.type,
        params_json=orjson.dumps(job.params).decode(),
        owner_id=job.owner_id,
        priority=job.priority,
        status=job.status.value,
        progress=job.progress,
        progress_message=job.progress_message,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        result_json="" if job.result is None else orjson.dumps(job.result).decode(),
        artifacts=list(artifacts),
        cancel_requested=job.cancel_requested,
        retry_at=_ts(job.retry_at),
        created_at=_ts(job.created_at),
        started_at=_ts(job.started_at),
        finished_at=_ts(job.finished_at),
        updated_at=_ts(job.updated_at),
        expires_at=_ts(job.expires_at),
    )
    if job.error_code:
        message.error.CopyFrom(worker_pb2.JobError(code=job.error_code, message=job.error_message))
    return message
