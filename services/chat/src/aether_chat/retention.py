"""Component: the retention job. Every `interval_s` it deletes the messages older than the
configured retention (CHAT_MESSAGE_RETENTION_DAYS, 365 by default). Message ids are UUIDv7, so
"older than" is an `_id` range: no extra index, and only the oldest messages of each room go
(history keeps starting at some seq > 1, which is what GetHistory's has_more reports)."""

from __future__ import annotations

import asyncio
import contextlib

from aether_chat.metrics import RETENTION_DELETED
from aether_chat.service import ChatService
from aether_common.logging import get_logger

log = get_logger(__name__)


class RetentionJob:
    name = "retention"

    def __init__(self, service: ChatService, *, interval_s: float) -> None:
        self._service = service
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run_once(self) -> int:
        deleted = await self._service.purge_expired()
        if deleted:
            RETENTION_DELETED.inc(deleted)
            log.info("messages past retention deleted", messages=deleted)
        return deleted

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.run_once()
            except Exception:  # the job must outlive a database hiccup
                log.exception("retention run failed; will retry")
