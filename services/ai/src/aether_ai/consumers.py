"""Kafka consumers: `aether.user.deleted.v1` (auth) erases what the AI service holds about the user.

Erased: conversations with their messages, jobs, preferences and the per-request usage rows. The
daily usage aggregates stay (counts and cost only, kept for billing).

The consumer starts in the background and retries until Kafka answers: the AI service serves its
RPCs without Kafka, so a broker outage (or the seconds a consumer group takes to form) never
delays or stops it; erasures wait in the topic meanwhile. The common `EventConsumer` records
each event id in `processed_events` in the same PostgreSQL transaction as the erasure (the
handler deletes through `ctx.tx`), so a redelivered event is handled once; a second deletion of
the same user finds nothing left anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aether.auth.v1 import events_pb2 as auth_events
from aether_ai import repository
from aether_ai.db import Database
from aether_ai.events import USER_DELETED
from aether_common.events import (
    Claim,
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

log = get_logger(__name__)

START_BACKOFF_S = 0.5
MAX_START_BACKOFF_S = 30.0
# How long stop() waits for a start in progress (a group join) before abandoning it.
STOP_WAIT_S = 15.0


class _DatabaseIdempotencyStore:
    """`PgIdempotencyStore` on the database's pool, which exists only once the database started
    (the consumer is built before)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def claim(self, group: str, event_ids: Sequence[str]) -> AsyncIterator[Claim[Any]]:
        async with PgIdempotencyStore(self._db.pool).claim(group, event_ids) as claim:
            yield claim


class UserEventsConsumer:
    """Component: the consumer group member for auth's user events."""

    def __init__(
        self,
        db: Database,
        *,
        bootstrap: str,
        group_id: str,
        topic_prefix: str = "",
        options: ConsumerOptions | None = None,
        dlq_producer: EventProducer | None = None,
    ) -> None:
        self.name = f"consumer:{group_id}"
        self.bootstrap = bootstrap
        self.topic = topic_prefix + USER_DELETED
        self.consumer: EventConsumer[Any] = EventConsumer(
            bootstrap,
            group_id,
            _DatabaseIdempotencyStore(db),
            options=options,
            dlq_producer=dlq_producer,
            name=self.name,
        )
        self.consumer.add_handler(self.topic, auth_events.UserDeleted, self.user_deleted)
        self._starting: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._running = False

    async def start(self) -> None:
        self._stopping.clear()
        self._starting = asyncio.create_task(self._start_consuming(), name=f"{self.name}-start")

    async def _start_consuming(self) -> None:
        backoff = START_BACKOFF_S
        while not self._stopping.is_set():
            try:
                # auth owns the topic; creating it if missing (idempotent) spares a consumer
                # that starts first a long wait for metadata before it sees the topic.
                await ensure_topics(self.bootstrap, [TopicSpec(self.topic)])
                await self.consumer.start()
            except Exception as exc:  # Kafka away: try again, never give up
                log.warning("consumer cannot start yet; retrying", error=repr(exc))
                with contextlib.suppress(Exception):
                    await self.consumer.stop()  # release what the failed start opened
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, MAX_START_BACKOFF_S)
            else:
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
        await self.consumer.stop()

    async def ready(self) -> bool:
        """Alive: consuming, or still trying to start (Kafka is not the service's to wait for)."""
        if self._running:
            return await self.consumer.ready()
        return self._starting is not None and not self._starting.done()

    async def wait_running(self, within_s: float) -> None:
        """Until the consumer has joined its group (tests)."""
        if self._starting is not None:
            await asyncio.wait_for(asyncio.shield(self._starting), within_s)

    async def user_deleted(
        self, event: Event[auth_events.UserDeleted], ctx: HandleContext[Any]
    ) -> None:
        user_id = event.payload.user_id or event.subject
        if not user_id:
            log.warning("user.deleted without a user id; ignored", event_id=event.id)
            return
        erased = await repository.erase_user(ctx.tx, user_id)
        log.info("AI data of a deleted account erased", user_id=user_id, **erased)
