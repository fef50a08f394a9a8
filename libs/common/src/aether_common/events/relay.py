"""The outbox relay loop shared by the PostgreSQL and MongoDB outboxes.

One replica at a time drains (the store decides who: an advisory lock, a lease). Each round it
reads the oldest unsent rows, sends them all, waits for the broker's acks and marks sent only the
acknowledged prefix: a crash between send and mark re-sends (at-least-once, consumers de-duplicate
by event id), and a failure in the middle of a batch re-sends from the first unacked row, so the
first delivery of each event keeps the outbox order. While the broker is down rows simply stay
unsent; after a failure the relay re-creates the topics (a broker that lost them, as the local
in-memory one does on restart) and backs off.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aether.events.v1.envelope_pb2 import EventEnvelope
from aether_common.events.producer import Delivery, EventProducer
from aether_common.events.topics import TopicSpec, ensure_topics
from aether_common.logging import get_logger
from aether_common.metrics import OUTBOX_PENDING, OUTBOX_PUBLISHED

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    ref: Any  # the store's own row id, handed back to mark_sent
    envelope: EventEnvelope


@dataclass(frozen=True, slots=True)
class RelayOptions:
    batch_size: int = 500
    # While events keep coming the relay polls every `active_poll_s` (cheap, and it spares
    # writers the cost of notifying); after `active_for_s` without any it asks for
    # notifications and sleeps, waking on one or after `poll_interval` at the latest.
    active_poll_s: float = 0.005
    active_for_s: float = 0.1
    poll_interval: float = 1.0
    retry_backoff: float = 0.2
    max_backoff: float = 5.0
    # Sent rows are kept this long (for inspection), then purged while idle.
    retain_sent_s: float = 3600.0
    purge_every_s: float = 60.0
    stop_grace_s: float = 10.0


class OutboxRelay(ABC):
    """Component draining one outbox to Kafka. Subclasses supply the store operations."""

    store: str  # metrics label: "postgres" or "mongo"

    def __init__(
        self,
        producer: EventProducer,
        *,
        topics: Sequence[TopicSpec] = (),
        options: RelayOptions | None = None,
        name: str = "outbox-relay",
    ) -> None:
        self.name = name
        self.producer = producer
        self.options = options or RelayOptions()
        self._specs = {spec.name: spec for spec in topics}
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        self._last_count = 0.0
        self._recovering = False
        self._last_rows = 0.0
        self._listening: bool | None = None  # unknown until this relay sets it
        self.leading = False

    # -- store operations ---------------------------------------------------------------------
    @abstractmethod
    async def _open(self) -> None:
        """Connect and subscribe to insert notifications (which call `self.wake()`)."""

    @abstractmethod
    async def _close(self) -> None:
        """Release connections and leadership; must not raise."""

    @abstractmethod
    async def _lead(self) -> bool:
        """Take or keep the right to drain; False while another replica holds it."""

    @abstractmethod
    async def _fetch(self, limit: int) -> list[OutboxRow]:
        """The oldest unsent rows, in outbox order."""

    @abstractmethod
    async def _mark_sent(self, refs: list[Any]) -> None: ...

    @abstractmethod
    async def _count_pending(self) -> int: ...

    @abstractmethod
    async def _purge_sent(self, older_than_s: float) -> int: ...

    @abstractmethod
    async def _set_listening(self, listening: bool) -> None:
        """Tell writers whether to notify (only worth it while the relay sleeps)."""

    # -- Component ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Finish the batch in flight (marking what was acked), then release the store."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self.wake()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.options.stop_grace_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        self._wakeup.set()

    # -- loop ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = self.options.retry_backoff
        while not self._stopping.is_set():
            try:
                await self._open()
                await self._drain_while_connected()
                backoff = self.options.retry_backoff
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the relay must outlive any store or broker failure
                log.warning("outbox relay error; retrying", relay=self.name, error=repr(exc))
                await self._pause(backoff)
                backoff = min(backoff * 2, self.options.max_backoff)
            finally:
                self.leading = False
                self._listening = None
                await self._close()

    async def _drain_while_connected(self) -> None:
        backoff = self.options.retry_backoff
        while not self._stopping.is_set():
            if not await self._lead():
                await self._pause(self.options.poll_interval)
                continue
            if not self.leading:
                self.leading = True
                log.info("outbox relay draining", relay=self.name)
                await self._ensure_topics(list(self._specs))
            self._wakeup.clear()  # before reading, so an insert during the read wakes us again
            rows = await self._fetch(self.options.batch_size)
            await self._report_pending(len(rows))
            if not rows:
                await self._wait_for_rows()
                continue
            self._last_rows = time.monotonic()
            if self._listening is not False:
                self._listening = False
                await self._set_listening(False)
            if self._recovering:
                # After a failure the broker may have restarted without its topics, and some
                # brokers (tansu) ack records sent to a vanished topic and drop them: make sure
                # the topics exist before sending again.
                if not await self._ensure_topics(sorted({row.envelope.type for row in rows})):
                    await self._pause(backoff)
                    backoff = min(backoff * 2, self.options.max_backoff)
                    continue
                self._recovering = False
            acked, error = await self._publish(rows)
            if acked:
                await self._mark_sent([row.ref for row in rows[:acked]])
                OUTBOX_PUBLISHED.labels(store=self.store).inc(acked)
            if acked < len(rows):
                log.warning(
                    "outbox publish failed; will retry",
                    relay=self.name,
                    acked=acked,
                    batch=len(rows),
                    error=repr(error),
                )
                self._recovering = True
                await self._pause(backoff)
                backoff = min(backoff * 2, self.options.max_backoff)
            else:
                backoff = self.options.retry_backoff

    async def _wait_for_rows(self) -> None:
        if time.monotonic() - self._last_rows < self.options.active_for_s:
            # While rows keep coming, poll on the clock and let rows gather meanwhile: a wake
            # per insert would cost a fetch and a mark per row.
            await self._pause(self.options.active_poll_s)
        elif self._listening is not True:
            # Ask for notifications, then read once more before sleeping: a row committed
            # before writers saw the request would otherwise wait for the poll interval.
            await self._set_listening(True)
            self._listening = True
        else:
            await self._maybe_purge()
            await self._idle(self.options.poll_interval)

    async def _publish(self, rows: list[OutboxRow]) -> tuple[int, BaseException | None]:
        """Send every row, wait for the acks; return how many leading rows were acked."""
        deliveries: list[Delivery] = []
        error: BaseException | None = None
        try:
            deliveries = await self.producer.send_envelopes([row.envelope for row in rows])
        except Exception as exc:  # e.g. metadata timeout while the broker is away
            error = exc
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        acked = 0
        for result in results:
            if isinstance(result, BaseException):
                error = result
                break
            acked += 1
        return acked, error

    async def _ensure_topics(self, names: list[str]) -> bool:
        specs = [self._specs.get(name) or TopicSpec(name) for name in names]
        try:
            await ensure_topics(self.producer.bootstrap, specs)
        except Exception as exc:  # broker still away: the next round tries again
            log.warning("cannot ensure topics yet", relay=self.name, error=repr(exc))
            return False
        return True

    async def _report_pending(self, fetched: int) -> None:
        gauge = OUTBOX_PENDING.labels(store=self.store)
        if fetched < self.options.batch_size:
            gauge.set(fetched)
        elif time.monotonic() - self._last_count > 1.0:  # counting a long backlog costs a scan
            self._last_count = time.monotonic()
            gauge.set(await self._count_pending())

    async def _maybe_purge(self) -> None:
        if time.monotonic() - self._last_purge < self.options.purge_every_s:
            return
        self._last_purge = time.monotonic()
        purged = await self._purge_sent(self.options.retain_sent_s)
        if purged:
            log.info("outbox purged sent rows", relay=self.name, rows=purged)

    # asyncio.timeout rather than wait_for: no task per wait, and on 3.11 wait_for can swallow
    # a cancel that comes as the event is set.
    async def _idle(self, seconds: float) -> None:
        """Wait for an insert notification, a stop, or the poll interval."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but return at once on stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
