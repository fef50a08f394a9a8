"""Group commit for SendMessage: the sends waiting share the next transaction, whatever their
rooms.

A room's messages are ordered by its counter, so its sends commit one transaction after the
other (db.py serialises them per room in this process). Instead of one transaction per message,
the sends that queued up while a transaction was in flight go together in the next one: one
counter update per room, then for all of them one membership write, one insert of the messages
and one of their events, one commit, and one Redis round trip for the frames, whatever their
number. A lone send is answered at once, as before; under load each message costs a fraction of
a transaction (a batch is k room counters + 4 operations, against 5 per room when each room had
its own). One transaction is in flight per process: sends queue behind it for at most its
duration. Replicas race on the counters: a conflict on any of its rooms re-runs the batch.

Each send still gets its own answer (`ChatService.send_batch`): a refused draft never fails the
others, and a client that gives up waiting leaves its message to be stored or not, as a single
send whose answer was lost would (it retries with the same client_msg_id).

This opens the transactions, so it belongs to the boundary like grpc.py.
"""

from __future__ import annotations

import asyncio

from aether_chat.db import Database
from aether_chat.metrics import SEND_BATCH_SIZE
from aether_chat.service import ChatService, Draft, Sent
from aether_common.errors import AetherError
from aether_common.logging import get_logger

log = get_logger(__name__)


class SendBatcher:
    def __init__(self, database: Database, service: ChatService, *, max_batch: int) -> None:
        self._db = database
        self._service = service
        self.max_batch = max_batch
        self._waiting: list[tuple[Draft, asyncio.Future[Sent]]] = []
        self._draining = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, draft: Draft) -> Sent:
        """Queue the draft; the stored message (or the send's own error)."""
        future: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
        # Its caller may be gone (cancelled) when the answer comes: retrieve it anyway.
        future.add_done_callback(_retrieve)
        self._waiting.append((draft, future))
        if not self._draining:
            self._draining = True
            # A task of its own: a caller that goes away must not cancel the others' batch.
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                self._waiting = self._waiting[self.max_batch :]
                await self._commit(batch)
        finally:
            self._draining = False

    async def _commit(self, batch: list[tuple[Draft, asyncio.Future[Sent]]]) -> None:
        drafts = [draft for draft, _ in batch]
        SEND_BATCH_SIZE.observe(len(drafts))
        try:
            answers = await self._db.transaction(
                lambda uow: self._service.send_batch(uow, drafts),
                keys=[f"room:{draft.room_id}" for draft in drafts],
            )
        except Exception as exc:  # the datastore failed the whole batch: each send says so
            if not isinstance(exc, AetherError):
                log.exception("send batch failed", size=len(drafts))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, Sent):
                future.set_result(answer)
            else:
                future.set_exception(answer)


def _retrieve(future: asyncio.Future[Sent]) -> None:
    if not future.cancelled():
        future.exception()
