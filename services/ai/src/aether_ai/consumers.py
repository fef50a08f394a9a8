"""Kafka consumers: `aether.user.deleted.v1` (auth) erases what the AI service holds about the user.

Erased: conversations with their messages, jobs, preferences and the per-request usage rows. The
daily usage aggregates stay (counts and cost only, kept for billing).

The consumer joins in the background and retries until Kafka answers (BackgroundConsumer): the
AI service serves its RPCs without Kafka; erasures wait in the topic meanwhile. The common
`EventConsumer` records each event id in `processed_events` in the same PostgreSQL transaction
as the erasure (the handler erases through `ctx.tx`, by AiService.erase_user), so a redelivered
event is handled once; a second deletion of the same user finds nothing left anyway.
"""

from __future__ import annotations

from typing import Any

from aether.auth.v1 import events_pb2 as auth_events
from aether_ai.events import USER_DELETED
from aether_ai.service import AiService
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

log = get_logger(__name__)


class UserEventsConsumer(BackgroundConsumer):
    """Component: the consumer group member for auth's user events."""

    def __init__(
        self,
        db: PostgresDatabase,
        service: AiService,
        *,
        bootstrap: str,
        group_id: str,
        topic_prefix: str = "",
        options: ConsumerOptions | None = None,
        dlq_producer: EventProducer | None = None,
    ) -> None:
        super().__init__(
            bootstrap,
            [topic_prefix + USER_DELETED],
            group_id=group_id,
            options=options,
            dlq_producer=dlq_producer,
        )
        self._db = db
        self._service = service

    def build(self) -> EventConsumer[Any]:
        # The idempotency store needs the pool, which exists once the database started.
        consumer = self.new_consumer(PgIdempotencyStore(self._db.pool))
        consumer.add_handler(self.topics[0], auth_events.UserDeleted, self.user_deleted)
        return consumer

    async def user_deleted(
        self, event: Event[auth_events.UserDeleted], ctx: HandleContext[Any]
    ) -> None:
        user_id = event.payload.user_id or event.subject
        if not user_id:
            log.warning("user.deleted without a user id; ignored", event_id=event.id)
            return
        erased = await self._service.erase_user(ctx.tx, user_id)
        log.info("AI data of a deleted account erased", user_id=user_id, **erased)
