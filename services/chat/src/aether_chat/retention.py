"""Component: the retention job. Every `interval_s` it deletes the messages older than the
configured retention (CHAT_MESSAGE_RETENTION_DAYS, 365 by default). Message ids are UUIDv7, so
"older than" is an `_id` range: no extra index, and only the oldest messages of each room go
(history keeps starting at some seq > 1, which is what GetHistory's has_more reports)."""

from __future__ import annotations

from aether_chat.metrics import RETENTION_DELETED
from aether_chat.service import ChatService
from aether_common.logging import get_logger
from aether_common.periodic import Periodic

log = get_logger(__name__)


class RetentionJob(Periodic):
    name = "retention"

    def __init__(self, service: ChatService, *, interval_s: float) -> None:
        super().__init__(interval_s=interval_s)
        self._service = service

    async def run_once(self) -> int:
        deleted = await self._service.purge_expired()
        if deleted:
            RETENTION_DELETED.inc(deleted)
            log.info("messages past retention deleted", messages=deleted)
        return deleted
