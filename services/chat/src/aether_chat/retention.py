"""Component: the fallback retention run. Every `interval_s` (CHAT_RETENTION_INTERVAL_S, 1 h;
0: off) it runs the same archive-then-purge as the ArchiveExpiredMessages RPC that the worker
calls daily (archive.py), so a message is never deleted without its archive, whoever runs it.
It stays as a fallback: retention keeps working while the worker is away, and a run that finds
nothing due costs one indexed `_id` lookup."""

from __future__ import annotations

from aether_chat.archive import MessageArchive
from aether_common.periodic import Periodic


class RetentionJob(Periodic):
    name = "retention"

    def __init__(self, archive: MessageArchive, *, interval_s: float) -> None:
        super().__init__(interval_s=interval_s)
        self._archive = archive

    async def start(self) -> None:
        if self.interval_s > 0:
            await super().start()

    async def ready(self) -> bool:
        return self.interval_s == 0 or await super().ready()

    async def run_once(self) -> int:
        """Archive and delete what is past retention; the number of messages deleted."""
        return (await self._archive.run()).deleted
