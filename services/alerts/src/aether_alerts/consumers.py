"""Kafka consumers: auth's `aether.user.deleted.v1` erases the user's rules, firings, inbox,
webhooks and address; `aether.user.registered.v1` and `aether.user.email_verified.v1` keep the
user's address in `contacts` (email delivery; alerts never asks auth for it).

The common `EventConsumer` de-duplicates by event id in `processed_events`, in the same
PostgreSQL transaction as the handler's writes (`ctx.tx`), commits offsets only after handling,
retries failures and parks poison records on the DLQ. It joins in the background and retries
until Kafka answers (BackgroundConsumer): the API serves without Kafka.

The market feed (ticks, bar closes) is the engine's consumer (engine*.py), not this one.
"""

from __future__ import annotations

from typing import Any

from aether.auth.v1 import events_pb2 as auth_events
from aether_alerts.metrics import USERS_ERASED
from aether_alerts.service import AlertsService
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

USER_DELETED = "aether.user.deleted.v1"
USER_REGISTERED = "aether.user.registered.v1"
EMAIL_VERIFIED = "aether.user.email_verified.v1"
TOPICS = (USER_DELETED, USER_REGISTERED, EMAIL_VERIFIED)

# A failing handler (PostgreSQL away) is retried for about 40 s before its record is parked on
# the DLQ (0.2 s doubling, capped at 10 s, 10 attempts).
DEFAULT_OPTIONS = ConsumerOptions(max_attempts=10, backoff_s=0.2, max_backoff_s=10.0)


class AccountConsumer(BackgroundConsumer):
    """Component: the consumer group member for auth's account deletions."""

    def __init__(
        self,
        database: PostgresDatabase,
        service: AlertsService,
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
        consumer = self.new_consumer(PgIdempotencyStore(self._database.pool))
        user_deleted, registered, verified = self.topics
        consumer.add_handler(user_deleted, auth_events.UserDeleted, self.user_deleted)
        consumer.add_handler(registered, auth_events.UserRegistered, self.address)
        consumer.add_handler(verified, auth_events.UserEmailVerified, self.address)
        return consumer

    async def address(
        self,
        event: Event[auth_events.UserRegistered] | Event[auth_events.UserEmailVerified],
        ctx: HandleContext[Any],
    ) -> None:
        user_id = event.payload.user_id or event.subject
        if not user_id or not event.payload.email:
            log.warning("account event without a user id or address; ignored", event_id=event.id)
            return
        verified = isinstance(event.payload, auth_events.UserEmailVerified)
        await self._service.set_contact(ctx.tx, user_id, event.payload.email, verified=verified)

    async def user_deleted(
        self, event: Event[auth_events.UserDeleted], ctx: HandleContext[Any]
    ) -> None:
        user_id = event.payload.user_id or event.subject
        if not user_id:
            log.warning("user.deleted without a user id; ignored", event_id=event.id)
            return
        erased = await self._service.erase_user(ctx.tx, user_id)
        USERS_ERASED.inc()
        log.info("alert rules of a deleted account erased", user_id=user_id, rules=erased)
