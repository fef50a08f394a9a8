"""Group commit for SendMessage: the sends waiting for one room share its next transaction.

A room's messages are ordered by its counter, so its sends commit one transaction after the
other (db.py serialises them per room in this process). Instead of one transaction per message,
the sends that queued up while a room's transaction was in flight go together in the next one:
one counter update, one membership write, one insert of the messages and one of their events,
one commit, and one Redis round trip for the frames, whatever their number. An idle room
answers a lone send at once, as before; a busy room pays its transaction once per batch. That is
what keeps a hot room's throughput from being one transaction latency per message.

Each send still gets its own answer (`ChatService.send_batch`): a refused draft never fails the
others, and a client that gives up waiting leaves its message to be stored or not, as a single
send whose answer was lost would (it retries with the same client_msg_id).

This opens the transactions, so it belongs to the boundary like grpc.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aether_chat.db import Database
from aether_chat.metrics import SEND_BATCH_SIZE
from aether_chat.service import ChatService, Draft, Sent
from aether_common.errors import AetherError
from aether_common.logging import get_logger

log = get_logger(__name__)


@dataclass
class _Room:
    waiting: list[tuple[Draft, asyncio.Future[Sent]]] = field(default_factory=list)
    draining: bool = False


class SendBatcher:
    def __init__(self, database: Database, service: ChatService, *, max_batch: int) -> None:
        self._db = database
        self._service = service
        self.max_batch = max_batch
        self._rooms: dict[str, _Room] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, draft: Draft) -> Sent:
        """Queue the draft on its room; the stored message (or the send's own error)."""
        future: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
        # Its caller may be gone (cancelled) when the answer comes: retrieve it anyway.
        future.add_done_callback(_retrieve)
        room = self._rooms.setdefault(draft.room_id, _Room())
        room.waiting.append((draft, future))
        if not room.draining:
            room.draining = True
            # A task of its own: a caller that goes away must not cancel the others' batch.
            task = asyncio.create_task(self._drain(draft.room_id, room))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(future)

    async def _drain(self, room_id: str, room: _Room) -> None:
        try:
            while room.waiting:
                batch, room.waiting = (
                    room.waiting[: self.max_batch],
                    room.waiting[self.max_batch :],
                )
                await self._commit(room_id, batch)
        finally:
            room.draining = False
            if self._rooms.get(room_id) is room and not room.waiting:
                del self._rooms[room_id]

    async def _commit(self, room_id: str, batch: list[tuple[Draft, asyncio.Future[Sent]]]) -> None:
        drafts = [draft for draft, _ in batch]
        SEND_BATCH_SIZE.observe(len(drafts))
        try:
            answers = await self._db.transaction(
                lambda uow: self._service.send_batch(uow, room_id, drafts), key=f"room:{room_id}"
            )
        except Exception as exc:  # the datastore failed the whole batch: each send says so
            if not isinstance(exc, AetherError):
                log.exception("send batch failed", room_id=room_id, size=len(drafts))
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
