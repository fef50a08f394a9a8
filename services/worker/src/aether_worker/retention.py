"""Retention (a Periodic, every `purge_interval_s`): finished jobs past their `expires_at`
(finished_at + WORKER_RETENTION_DAYS) are deleted with their S3 objects, in batches; objects
first, then rows, so a failure in between leaves rows that the next run deletes again (a
missing object is no error). No transaction is held across the S3 calls; replicas purging
together at worst delete the same objects twice. Jobs still queued or running never expire."""

from __future__ import annotations

from aether_common.logging import get_logger
from aether_common.periodic import Periodic
from aether_common.postgres import PostgresDatabase
from aether_common.s3 import S3Bucket
from aether_worker import artifacts, repository
from aether_worker.metrics import JOBS_PURGED

log = get_logger(__name__)


class Retention(Periodic):
    name = "job-retention"

    def __init__(
        self, database: PostgresDatabase, bucket: S3Bucket, *, interval_s: float, batch: int
    ) -> None:
        super().__init__(interval_s=interval_s)
        self._db = database
        self._bucket = bucket
        self._batch = batch

    async def run_once(self) -> int:
        total = 0
        while True:
            purged = await self._purge_batch()
            total += purged
            if purged < self._batch:
                break
        if total:
            JOBS_PURGED.inc(total)
            log.info("expired jobs purged", jobs=total)
        return total

    async def _purge_batch(self) -> int:
        async with self._db.connection() as conn:
            expired = await repository.expired_jobs(conn, self._batch)
        if not expired:
            return 0
        await artifacts.delete_all(self._bucket, [key for _, keys in expired for key in keys])
        async with self._db.connection() as conn:  # one statement
            await repository.delete_expired(conn, [job_id for job_id, _ in expired])
        return len(expired)
