"""Kafka consumers: chat's message events fill the "chat" namespace; auth's user.deleted erases.

- `aether.chat.message.created.v1` / `.edited.v1`: the message is embedded into "chat" (id =
  message id, user_id = sender, room_id; unchanged text is not embedded again);
- `aether.chat.message.deleted.v1`: its record is deleted;
- `aether.user.deleted.v1`: every record of that user, in every namespace, is erased.

The common `EventConsumer` de-duplicates by event id in `processed_events`, in the same
PostgreSQL transaction as the handler's writes (`ctx.tx`, the connection), commits offsets only
after handling, retries failures and parks poison records on the DLQ. Qdrant is written inside
the handler, before that transaction commits: a retry re-embeds and rewrites (idempotent).

The consumer joins in the background and retries until Kafka answers (BackgroundConsumer): memory
serves its RPCs without Kafka, and the seconds a consumer group takes to form never delay
readiness.
"""

from __future__ import annotations

from typing import Any

from aether.auth.v1 import events_pb2 as auth_events
from aether.chat.v1 import events_pb2 as chat_events
from aether_common.events import (
    BackgroundConsumer,
    ConsumerOptions,
    Event,
    EventConsumer,
    EventProducer,
    HandleContext,
    PgIdempotencyStore,
)
from aether_common.logging import get_logger
from aether_common.postgres import PostgresDatabase
from aether_memory import schemas
from aether_memory.metrics import USERS_ERASED
from aether_memory.namespaces import Namespace
from aether_memory.service import MemoryService

log = get_logger(__name__)

MESSAGE_CREATED = "aether.chat.message.created.v1"
MESSAGE_EDITED = "aether.chat.message.edited.v1"
MESSAGE_DELETED = "aether.chat.message.deleted.v1"
USER_DELETED = "aether.user.deleted.v1"
TOPICS = (MESSAGE_CREATED, MESSAGE_EDITED, MESSAGE_DELETED, USER_DELETED)

# A handler failing because Qdrant or the model is away is retried for about 40 s before its
# record is parked on the DLQ (0.2 s doubling, capped at 10 s, 10 attempts).
DEFAULT_OPTIONS = ConsumerOptions(max_attempts=10, backoff_s=0.2, max_backoff_s=10.0)


class ContentConsumer(BackgroundConsumer):
    """Component: the consumer group member for chat's message events and auth's deletions."""

    def __init__(
        self,
        database: PostgresDatabase,
        service: MemoryService,
        *,
        bootstrap: str,
        group_id: str,
        topic_prefix: str = "",
        options: ConsumerOptions | None = None,
        dlq_producer: EventProducer | None = None,
    ) -> None:
        super().__init__(
            bootstrap,
            [topic_prefix + topic for topic in TOPICS],
            group_id=group_id,
            options=options or DEFAULT_OPTIONS,
            dlq_producer=dlq_producer,
        )
        self._database = database
        self._service = service

    def build(self) -> EventConsumer[Any]:
        # The idempotency store needs the pool, which exists once the database started.
        consumer = self.new_consumer(PgIdempotencyStore(self._database.pool))
        created, edited, deleted, user_deleted = self.topics
        consumer.add_handler(created, chat_events.MessageCreated, self.message_created)
        consumer.add_handler(edited, chat_events.MessageEdited, self.message_edited)
        consumer.add_handler(deleted, chat_events.MessageDeleted, self.message_deleted)
        consumer.add_handler(user_deleted, auth_events.UserDeleted, self.user_deleted)
        return consumer

    async def message_created(
        self, event: Event[chat_events.MessageCreated], ctx: HandleContext[Any]
    ) -> None:
        await self._index_message(event.payload.message, ctx.tx)

    async def message_edited(
        self, event: Event[chat_events.MessageEdited], ctx: HandleContext[Any]
    ) -> None:
        await self._index_message(event.payload.message, ctx.tx)

    async def _index_message(self, message: Any, conn: Any) -> None:
        batch = self._service.chat_batch(schemas.chat_message(message))
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
