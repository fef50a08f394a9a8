"""The `JobContext` (handler.py) one attempt's handler gets: progress, cancellation checkpoints
and artifacts, every write fenced by the attempt's token. When the attempt no longer holds its
job (its lease ran out and another attempt took over, or the job was erased) a write raises
`AttemptFenced`, which ends the attempt without an outcome: the job is someone else's now."""

from __future__ import annotations

import time

from aether_common.postgres import PostgresDatabase
from aether_common.s3 import S3Bucket
from aether_worker import artifacts, repository
from aether_worker.handler import JobCancelled
from aether_worker.records import Artifact, Claim

# A checkpoint reads the job's cancel flag at most this often; more often it answers from the
# last read (handlers may checkpoint in tight loops).
CHECK_EVERY_S = 0.1


class AttemptFenced(Exception):
    """The attempt lost its job: stop and write nothing."""


class AttemptContext:
    def __init__(self, claim: Claim, database: PostgresDatabase, bucket: S3Bucket) -> None:
        self.claim = claim
        self.job_id = str(claim.job.id)
        self.owner_id = claim.job.owner_id
        self.attempt = claim.job.attempts
        self._db = database
        self._bucket = bucket
        self._checked_at = 0.0
        # Set by the heartbeat too, so a checkpoint after one sees a cancellation at once.
        self.cancel_seen = False
        # Set by the heartbeat when the lease was lost (the run is then stopped).
        self.lost = False

    def _answer(self, cancel_requested: bool | None) -> None:
        if cancel_requested is None:
            raise AttemptFenced(f"job {self.job_id}: this attempt no longer holds it")
        self._checked_at = time.monotonic()
        if cancel_requested:
            self.cancel_seen = True
        if self.cancel_seen:
            raise JobCancelled(f"job {self.job_id} was cancelled")

    async def progress(self, percent: int, message: str = "") -> None:
        percent = max(0, min(100, int(percent)))
        async with self._db.connection() as conn:  # one statement
            flag = await repository.progress(
                conn, self.claim.job.id, self.claim.token, percent, message[:500]
            )
        self._answer(flag)

    async def checkpoint(self) -> None:
        if self.cancel_seen:
            raise JobCancelled(f"job {self.job_id} was cancelled")
        if time.monotonic() - self._checked_at < CHECK_EVERY_S:
            return
        async with self._db.connection() as conn:
            flag = await repository.cancel_flag(conn, self.claim.job.id, self.claim.token)
        self._answer(flag)

    async def put_artifact(self, name: str, data: bytes, content_type: str) -> None:
        key = artifacts.key(self.claim.job.id, self.claim.token, name)
        await self._bucket.put(key, data, content_type=content_type)
        artifact = Artifact(name, content_type, len(data), key)
        async with self._db.connection() as conn:
            recorded, replaced = await repository.put_artifact(
                conn, self.claim.job.id, self.claim.token, artifact
            )
        if not recorded:  # fenced off: leave no object behind that no row lists
            await self._bucket.delete(key)
            raise AttemptFenced(f"job {self.job_id}: this attempt no longer holds it")
        if replaced is not None and replaced != key:  # an earlier attempt's object
            await self._bucket.delete(replaced)

    def __repr__(self) -> str:
        return f"AttemptContext(job_id={self.job_id!r}, attempt={self.attempt})"
