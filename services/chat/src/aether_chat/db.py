"""Chat's unit of work: the kit's MongoDB one (aether_common.mongo) plus the real-time changes a
committed transaction tells the outside world (`realtime.Changes`: frames to publish, cache
versions to bump, presence to clear).

The service queues them on `uow.changes`; they go to Redis in one round trip as the unit of
work's first after-commit action. Writes to a room run under its key (`room:<id>`), and the
component runs after-commit actions before it releases the key, so a room's frames leave in seq
order. A failure there is logged, never raised: the state is committed.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from aether_chat.realtime import Changes, Fanout
from aether_common import mongo


class UnitOfWork(mongo.UnitOfWork):
    def __init__(
        self, db: AsyncDatabase[dict[str, Any]], session: AsyncClientSession, *, fanout: Fanout
    ) -> None:
        super().__init__(db, session)
        self._fanout = fanout
        self.changes = Changes()
        self.after_commit(self._apply_changes)

    async def restart(self) -> None:
        await super().restart()
        self.changes = Changes()
        self.after_commit(self._apply_changes)

    async def _apply_changes(self) -> None:
        if self.changes:
            await self._fanout.apply(self.changes)


# The chat service's MongoDB component: its transactions get chat's unit of work.
Database = mongo.MongoDatabase[UnitOfWork]
