"""Component: retention. Every `interval_s` it deletes per-request usage rows older than
`AI_REQUEST_LOG_RETENTION_DAYS` (the admin view reads at most a week of them; the per-day
aggregates, which billing needs, stay) and finished jobs older than `AI_JOB_RETENTION_DAYS`
(their answers were there to be fetched)."""

from __future__ import annotations

from datetime import timedelta

from aether_ai import repository
from aether_common.logging import get_logger
from aether_common.periodic import Periodic
from aether_common.postgres import PostgresDatabase, UnitOfWork

log = get_logger(__name__)


class RetentionJob(Periodic):
    name = "retention"

    def __init__(
        self,
        database: PostgresDatabase,
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

        async def purge(uow: UnitOfWork) -> dict[str, int]:
            return {
                "requests": await repository.purge_requests(uow.conn, self._request_log),
                "jobs": await repository.purge_finished_jobs(uow.conn, self._finished_jobs),
            }

        purged = await self._db.transaction(purge)
        if any(purged.values()):
            log.info("rows past retention deleted", **purged)
        return purged
