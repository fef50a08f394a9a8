"""The scheduler (a Periodic, every `scheduler_interval_s`, on every replica; rows another
replica is handling are skipped): attempts whose lease ran out are queued again as new attempts
(or dead once none is left); retries that came due, and queued jobs whose work message went
unclaimed for `requeue_after_s`, get their work message (through the outbox). Retries are this
delayed re-enqueue, not retry topics: docs/worker.md "Retries and the DLQ" says why."""

from __future__ import annotations

from aether_common.logging import get_logger
from aether_common.periodic import Periodic
from aether_common.postgres import PostgresDatabase
from aether_worker.transitions import Transitions

log = get_logger(__name__)


class Scheduler(Periodic):
    name = "job-scheduler"

    def __init__(
        self, database: PostgresDatabase, transitions: Transitions, *, interval_s: float, batch: int
    ) -> None:
        super().__init__(interval_s=interval_s)
        self._db = database
        self._transitions = transitions
        self._batch = batch

    async def run_once(self) -> tuple[int, int]:
        expired = dispatched = 0
        while True:
            done = await self._db.transaction(
                lambda uow: self._transitions.expire_leases(uow, limit=self._batch)
            )
            expired += done
            if done < self._batch:
                break
        while True:
            done = await self._db.transaction(
                lambda uow: self._transitions.dispatch_due(uow, limit=self._batch)
            )
            dispatched += done
            if done < self._batch:
                break
        if expired:
            log.warning("attempts whose lease ran out were taken up again", jobs=expired)
        return expired, dispatched
