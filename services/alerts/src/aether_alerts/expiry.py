"""Expiry: rules past their `expires_at` (wall clock) turn `expired`, every
`ALERTS_EXPIRY_INTERVAL_S`, in batches of `ALERTS_EXPIRY_BATCH`, each batch one transaction with
its `aether.alert.rule.updated.v1` events. The engine never fires such a rule in the meantime:
`active_rules` leaves them out, and it checks `expires_at` itself. Replicas may run it together
(rows being expired elsewhere are skipped)."""

from __future__ import annotations

from aether_alerts.service import AlertsService
from aether_common.logging import get_logger
from aether_common.periodic import Periodic
from aether_common.postgres import PostgresDatabase

log = get_logger(__name__)


class Expiry(Periodic):
    name = "rule-expiry"

    def __init__(
        self, database: PostgresDatabase, service: AlertsService, *, interval_s: float, batch: int
    ) -> None:
        super().__init__(interval_s=interval_s)
        self._db = database
        self._service = service
        self._batch = batch

    async def run_once(self) -> int:
        total = 0
        while True:
            done = await self._db.transaction(
                lambda uow: self._service.expire(uow, limit=self._batch)
            )
            total += done
            if done < self._batch:
                break
        if total:
            log.info("alert rules expired", rules=total)
        return total
