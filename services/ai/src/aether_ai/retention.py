"""Component: retention. Every `interval_s` it deletes per-request usage rows older than
`AI_REQUEST_LOG_RETENTION_DAYS` (the admin view reads at most a week of them; the per-day
aggregates, which billing needs, stay) and finished jobs older than `AI_JOB_RETENTION_DAYS`
(their answers were there to be fetched)."""

from __future__ import annotations

from datetime import timedelta

from aether_ai import repository
from aether_ai.db import Database
from aether_common.logging import get_logger
from aether_common.periodic import Periodic

log = get_logger(__name__)


class RetentionJob(Periodic):
    name = "retention"

    def __init__(
        self,
        database: Database,
        *,
        interval_s: float,
        request_log: timedelta,
        finished_jobs: timedelta,
    ) -> None:
        super().__init__(interval_s=interval_s)
        self._db = database
        self._request_log = request_log
        self._finished_jobs = finished_jobs

    async def run_once(self) -> dict[str, int]:
        async with self._db.transaction() as conn:
            purged = {
                "requests": await repository.purge_requests(conn, self._request_log),
                "jobs": await repository.purge_finished_jobs(conn, self._finished_jobs),
            }
        if any(purged.values()):
            log.info("rows past retention deleted", **purged)
        return purged
