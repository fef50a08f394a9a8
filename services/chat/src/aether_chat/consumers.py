"""Kafka consumers: `aether.user.deleted.v1` (auth) erases what chat holds about the account.

The consumer joins in the background and retries until Kafka answers (BackgroundConsumer): chat
serves its RPCs from MongoDB and Redis; erasures wait in the topic meanwhile.

The common `EventConsumer` de-duplicates by event id in `processed_events`, in the same MongoDB
transaction as the handler's writes (the handler's unit of work runs in `ctx.tx`, the store's
session), retries failures and parks poison records on the DLQ. The erasure's outbox events
commit with it; its Redis effects (member frames, cache versions, presence) are applied as the
handler ends, just before that commit: they are idempotent, and a rolled-back attempt is retried
and applies them again.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from aether.auth.v1 import events_pb2 as auth_events
from aether_chat.db import Database
from aether_chat.events import USER_DELETED
from aether_chat.metrics import USERS_ERASED
from aether_chat.service import ChatService
from aether_common.events import (
    BackgroundConsumer,
    ConsumerOptions,
    Event,
    EventConsumer,
    EventProducer,
    HandleContext,
    MongoIdempotencyStore,
)
from aether_common.logging import get_logger

log = get_logger(__name__)


class UserEventsConsumer(BackgroundConsumer):
    """Component: the consumer group member for auth's user events."""

    def __init__(
        self,
        database: Database,
        service: ChatService,
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
        self._database = database
        self._service = service
        self.store = MongoIdempotencyStore(database.db)

    def build(self) -> EventConsumer[Any]:
        consumer = self.new_consumer(self.store)
        consumer.add_handler(self.topics[0], auth_events.UserDeleted, self.user_deleted)
        return consumer

    async def prepare(self) -> None:
        await self.store.ensure_indexes()  # MongoDB may still be coming up

    async def user_deleted(
        self, event: Event[auth_events.UserDeleted], ctx: HandleContext[AsyncClientSession]
    ) -> None:
        user_id = event.payload.user_id or event.subject
        if not user_id:
            log.warning("user.deleted without a user id; ignored", event_id=event.id)
            return
        uow = self._database.unit_of_work(ctx.tx)
        erased = await self._service.erase_user(uow, user_id)
        # The store commits once this returns; the Redis effects are idempotent: they go now.
        await uow.run_after_commit()
        USERS_ERASED.inc()
        log.info("chat data of a deleted account erased", user_id=user_id, messages=erased)
