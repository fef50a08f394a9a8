"""Job artifacts in S3: one object per artifact at `jobs/<job id>/<attempt>/<name>`, listed in
`job_artifacts`, handed out as signed GET URLs (the bucket stays private)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from aether.worker.v1 import worker_pb2
from aether_common.s3 import S3Bucket
from aether_worker.records import Job

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def key(job_id: uuid.UUID, token: uuid.UUID, name: str) -> str:
    """Per attempt: an attempt that lost its job can never overwrite (or delete) the object of
    the attempt that took over."""
    if not NAME.fullmatch(name):
        raise ValueError(f"artifact name {name!r}: letters, digits, '.', '_', '-' (1-100)")
    return f"jobs/{job_id}/{token.hex[:12]}/{name}"


async def signed(bucket: S3Bucket, job: Job, expires_s: int) -> list[worker_pb2.Artifact]:
    """The job's artifacts with URLs valid for `expires_s` (signing is local: no round trip)."""
    if not job.artifacts:
        return []
    until = datetime.now(UTC) + timedelta(seconds=expires_s)
    urls = await asyncio.gather(
        *(
            bucket.presigned_get(a.s3_key, expires_s=expires_s, filename=a.name)
            for a in job.artifacts
        )
    )
    answer = []
    for artifact, url in zip(job.artifacts, urls, strict=True):
        message = worker_pb2.Artifact(
            name=artifact.name, content_type=artifact.content_type, size=artifact.size, url=url
        )
        message.url_expires_at.FromDatetime(until)
        answer.append(message)
    return answer


async def delete_all(bucket: S3Bucket, keys: Iterable[str]) -> None:
    """Deletes objects (a missing one is fine: erasure and purges are re-run after a failure)."""
    for object_key in keys:
        await bucket.delete(object_key)
