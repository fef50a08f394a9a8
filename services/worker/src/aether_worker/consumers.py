"""Kafka consumers besides the work lanes: auth's `aether.user.deleted.v1` erases the user's
jobs, their results and their S3 objects.

The common `EventConsumer` de-duplicates by event id in `processed_events` in the handler's
transaction (`ctx.tx`), commits offsets after handling, retries failures and parks poison
records on the DLQ; an outage (S3 or PostgreSQL away) is retried until it passes. It joins in
the background (BackgroundConsumer): the API serves without Kafka.
"""

from __future__ import annotations

from typing import Any

from aether.auth.v1 import events_pb2 as auth_events
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
from aether_common.s3 import S3Bucket
from aether_worker import artifacts, repository
from aether_worker.metrics import USERS_ERASED

log = get_logger(__name__)

USER_DELETED = "aether.user.deleted.v1"

DEFAULT_OPTIONS = ConsumerOptions(max_attempts=10, backoff_s=0.2, max_backoff_s=10.0)


class AccountConsumer(BackgroundConsumer):
    """Component: the consumer group member for auth's account deletions."""

    def __init__(
        self,
        database: PostgresDatabase,
        bucket: S3Bucket,
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
            options=options or DEFAULT_OPTIONS,
            dlq_producer=dlq_producer,
        )
        self._database = database
        self._bucket = bucket

    def build(self) -> EventConsumer[Any]:
        consumer = self.new_consumer(PgIdempotencyStore(self._database.pool))
        consumer.add_handler(self.topics[0], auth_events.UserDeleted, self.user_deleted)
        return consumer

    async def user_deleted(
        self, event: Event[auth_events.UserDeleted], ctx: HandleContext[Any]
    ) -> None:
        user_id = event.payload.user_id or event.subject
        if not user_id:
            log.warning("user.deleted without a user id; ignored", event_id=event.id)
            return
        # Objects first: if the rows then fail to go, the redelivery deletes them again (a
        # missing object is no error). A running attempt of the user's finds its job gone and
        # stops writing (fenced), deleting the object it may still store.
        await artifacts.delete_all(
            self._bucket, await repository.owner_artifact_keys(ctx.tx, user_id)
        )
        erased = await repository.delete_owner_jobs(ctx.tx, user_id)
        USERS_ERASED.inc()
        log.info("jobs of a deleted account erased", user_id=user_id, jobs=erased)
