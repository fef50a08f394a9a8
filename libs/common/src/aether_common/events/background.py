"""A consumer group member that joins in the background and keeps trying until Kafka answers.

A service serves its RPCs without Kafka, so neither a broker outage nor the seconds a consumer
group takes to form may delay or stop its start: the events wait in their topics meanwhile.

    class UserEventsConsumer(BackgroundConsumer):
        def __init__(self, db, *, bootstrap, group_id, topic_prefix=""):
            super().__init__(bootstrap, [topic_prefix + USER_DELETED], group_id=group_id)
            ...
        def build(self) -> EventConsumer[Any]:         # a fresh consumer for every attempt
            consumer = self.new_consumer(PgIdempotencyStore(db.pool))
            consumer.add_handler(self.topics[0], UserDeleted, self.user_deleted)
            return consumer

Each attempt creates the topics it reads when missing (idempotent: their producers own them, but
a consumer that starts first would otherwise wait long for metadata), runs `prepare()` (say,
indexes the idempotency store needs), then starts a fresh `build()`; a failure is logged and
retried with doubling backoff. `ready()` is true while consuming or still trying.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from aether_common.events.consumer import ConsumerOptions, EventConsumer
from aether_common.events.idempotency import IdempotencyStore
from aether_common.events.producer import EventProducer
from aether_common.events.topics import TopicSpec, ensure_topics
from aether_common.logging import get_logger

log = get_logger(__name__)

START_BACKOFF_S = 0.5
MAX_START_BACKOFF_S = 30.0
# How long stop() waits for a start in progress (a group join) before abandoning it.
STOP_WAIT_S = 15.0


class BackgroundConsumer(ABC):
    """Component base: subclasses give `build()` (and optionally `prepare()`)."""

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        *,
        group_id: str,
        options: ConsumerOptions | None = None,
        dlq_producer: EventProducer | None = None,
    ) -> None:
        self.name = f"consumer:{group_id}"
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.group_id = group_id
        self.options = options
        self.dlq_producer = dlq_producer
        # The running consumer, once it joined its group.
        self.consumer: EventConsumer[Any] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @abstractmethod
    def build(self) -> EventConsumer[Any]:
        """A fresh consumer with its handlers (one per start attempt)."""

    def new_consumer(self, store: IdempotencyStore[Any]) -> EventConsumer[Any]:
        """A consumer of this member's group, options and DLQ producer, on `store` (`build()`
        adds its handlers)."""
        return EventConsumer(
            self.bootstrap,
            self.group_id,
            store,
            options=self.options,
            dlq_producer=self.dlq_producer,
            name=self.name,
        )

    async def prepare(self) -> None:  # noqa: B027 (an optional hook: most consumers need none)
        """Run before each start attempt."""

    async def start(self) -> None:
        self._stopping.clear()
        self._starting = asyncio.create_task(self._start_consuming(), name=f"{self.name}-start")

    async def _start_consuming(self) -> None:
        backoff = START_BACKOFF_S
        while not self._stopping.is_set():
            consumer = self.build()
            try:
                await ensure_topics(self.bootstrap, [TopicSpec(topic) for topic in self.topics])
                await self.prepare()
                await consumer.start()
            except Exception as exc:  # Kafka (or the store) away: try again, never give up
                log.warning("consumer cannot start yet; retrying", error=repr(exc))
                with contextlib.suppress(Exception):
                    await consumer.stop()  # release what the failed start opened
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, MAX_START_BACKOFF_S)
            else:
                self.consumer = consumer
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
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await consumer.stop()

    async def ready(self) -> bool:
        """Alive: consuming, or still trying to start (Kafka is not the service's to wait for)."""
        if self.consumer is not None:
            return await self.consumer.ready()
        return self._starting is not None and not self._starting.done()

    async def wait_running(self, within_s: float) -> None:
        """Until the consumer has joined its group (tests)."""
        if self._starting is not None:
            await asyncio.wait_for(asyncio.shield(self._starting), within_s)
