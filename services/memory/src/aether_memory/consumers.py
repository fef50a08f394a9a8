"""Kafka consumers: chat's message events fill the "chat" namespace; auth's user.deleted erases.

- `aether.chat.message.created.v1` / `.edited.v1`: the message is embedded into "chat" (id =
  message id, user_id = sender, room_id; unchanged text is not embedded again);
- `aether.chat.message.deleted.v1`: its record is deleted;
- `aether.user.deleted.v1`: every record of that user, in every namespace, is erased.

The common `EventConsumer` de-duplicates by event id in `processed_events`, in the same
PostgreSQL transaction as the handler's writes (`ctx.tx`, the connection), commits offsets only
after handling, retries failures and parks poison records on the DLQ. Qdrant is written inside
the handler, before that transaction commits: a retry re-embeds and rewrites (idempotent).

The consumer starts in the background and retries until Kafka answers: memory serves its RPCs
without Kafka, and the seconds a consumer group takes to form never delay readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aether.auth.v1 import events_pb2 as auth_events
from aether.chat.v1 import events_pb2 as chat_events
from aether_common.events import (
    ConsumerOptions,
    Event,
    EventConsumer,
    EventProducer,
    HandleContext,
    PgIdempotencyStore,
    TopicSpec,
    ensure_topics,
)
from aether_common.logging import get_logger
from aether_memory.access import Namespace
from aether_memory.db import Database
from aether_memory.metrics import USERS_ERASED
from aether_memory.service import MemoryService

log = get_logger(__name__)

MESSAGE_CREATED = "aether.chat.message.created.v1"
MESSAGE_EDITED = "aether.chat.message.edited.v1"
MESSAGE_DELETED = "aether.chat.message.deleted.v1"
USER_DELETED = "aether.user.deleted.v1"
TOPICS = (MESSAGE_CREATED, MESSAGE_EDITED, MESSAGE_DELETED, USER_DELETED)

START_BACKOFF_S = 0.5
MAX_START_BACKOFF_S = 30.0
STOP_WAIT_S = 15.0
# A handler failing because Qdrant or the model is away is retried for about 40 s before its
# record is parked on the DLQ (0.2 s doubling, capped at 10 s, 10 attempts).
DEFAULT_OPTIONS = ConsumerOptions(max_attempts=10, backoff_s=0.2, max_backoff_s=10.0)


class ContentConsumer:
    """Component: the consumer group member for chat's message events and auth's deletions."""

    def __init__(
        self,
        database: Database,
        service: MemoryService,
        *,
        bootstrap: str,
        group_id: str,
        topic_prefix: str = "",
        options: ConsumerOptions | None = None,
        dlq_producer: EventProducer | None = None,
    ) -> None:
        self.name = f"consumer:{group_id}"
        self._database = database
        self._service = service
        self.bootstrap = bootstrap
        self.topics = [topic_prefix + topic for topic in TOPICS]
        self._group_id = group_id
        self._options = options or DEFAULT_OPTIONS
        self._dlq_producer = dlq_producer
        self.consumer: EventConsumer[Any] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._running = False

    def _build(self) -> EventConsumer[Any]:
        # The idempotency store needs the pool, which exists once the database started.
        store = PgIdempotencyStore(self._database.pool)
        consumer: EventConsumer[Any] = EventConsumer(
            self.bootstrap,
            self._group_id,
            store,
            options=self._options,
            dlq_producer=self._dlq_producer,
            name=self.name,
        )
        created, edited, deleted, user_deleted = self.topics
        consumer.add_handler(created, chat_events.MessageCreated, self.message_created)
        consumer.add_handler(edited, chat_events.MessageEdited, self.message_edited)
        consumer.add_handler(deleted, chat_events.MessageDeleted, self.message_deleted)
        consumer.add_handler(user_deleted, auth_events.UserDeleted, self.user_deleted)
        return consumer

    # -- Component ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping.clear()
        self._starting = asyncio.create_task(self._start_consuming(), name=f"{self.name}-start")

    async def _start_consuming(self) -> None:
        backoff = START_BACKOFF_S
        while not self._stopping.is_set():
            consumer = self._build()
            try:
                # chat and auth own these topics; creating the missing ones (idempotent) spares
                # a consumer that starts first a long wait for metadata.
                await ensure_topics(self.bootstrap, [TopicSpec(topic) for topic in self.topics])
                await consumer.start()
            except Exception as exc:  # Kafka away: try again, never give up
                log.warning("consumer cannot start yet; retrying", error=repr(exc))
                with contextlib.suppress(Exception):
                    await consumer.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, MAX_START_BACKOFF_S)
            else:
                self.consumer = consumer
                self._running = True
                return

    async def stop(self) -> None:
        self._stopping.set()
        task, self._starting = self._starting, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_WAIT_S)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._running = False
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await consumer.stop()

    async def ready(self) -> bool:
        """Alive: consuming, or still trying to start (Kafka is not memory's to wait for)."""
        if self._running and self.consumer is not None:
            return await self.consumer.ready()
        return self._starting is not None and not self._starting.done()

    async def wait_running(self, within_s: float) -> None:
        """Until the consumer has joined its group (tests)."""
        if self._starting is not None:
            await asyncio.wait_for(asyncio.shield(self._starting), within_s)

    # -- handlers ----------------------------------------------------------------------------
    async def message_created(
        self, event: Event[chat_events.MessageCreated], ctx: HandleContext[Any]
    ) -> None:
        await self._index_message(event.payload.message, ctx.tx)

    async def message_edited(
        self, event: Event[chat_events.MessageEdited], ctx: HandleContext[Any]
    ) -> None:
        await self._index_message(event.payload.message, ctx.tx)

    async def _index_message(self, message: Any, conn: Any) -> None:
        batch = self._service.chat_batch(message)
        if batch is None:  # deleted or emptied: nothing to search any more
            if message.message_id:
                await self._service.remove(
                    conn, Namespace.CHAT, "", [message.message_id], reason="message_deleted"
                )
            return
        await self._service.store(conn, batch)

    async def message_deleted(
        self, event: Event[chat_events.MessageDeleted], ctx: HandleContext[Any]
    ) -> None:
        message_id = event.payload.message_id
        if not message_id:
            log.warning("message.deleted without a message id; ignored", event_id=event.id)
            return
        await self._service.remove(
            ctx.tx, Namespace.CHAT, "", [message_id], reason="message_deleted"
        )

    async def user_deleted(
        self, event: Event[auth_events.UserDeleted], ctx: HandleContext[Any]
    ) -> None:
        user_id = event.payload.user_id or event.subject
        if not user_id:
            log.warning("user.deleted without a user id; ignored", event_id=event.id)
            return
        erased = await self._service.erase_user(ctx.tx, user_id)
        USERS_ERASED.inc()
        log.info("memory records of a deleted account erased", user_id=user_id, records=erased)
