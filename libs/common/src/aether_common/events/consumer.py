"""EventConsumer: a Kafka consumer group member that hands typed events to handlers.

Guarantees, in order of importance:
- an offset is committed only after its record was handled (or parked on the DLQ), so a crash
  re-delivers and never loses;
- each event id is handled once per group: the idempotency store records the id in the same
  transaction as the handler's writes (when the handler writes through `ctx.tx`);
- a failing handler is retried with exponential backoff, then its record is parked on
  `<topic>.dlq` (a DeadLetter value, the original headers plus `dlq_error`) and committed;
  a record that is not an event at all (bad headers, undecodable payload) goes there at once;
- store failures, and a handler's datastore outages (`aether_common.outages`, `Unavailable`),
  are retried until they pass: they say nothing about the record, so they never send it to the
  DLQ;
- on a rebalance the batch in flight finishes and handled offsets are committed before the
  partitions go to another member.
Records of one partition are handled in order. Consecutive records are handled in one store
transaction (`batch_size`), which is what lets a consumer keep up with a busy topic; if any
handler in the batch fails, the whole transaction rolls back and the batch is handled again one
record per transaction, so a failure only ever costs the failing record its retries. Handlers of
a batch share `ctx.tx` and see each other's writes, exactly as if run one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind

from aether.events.v1.envelope_pb2 import EventEnvelope
from aether_common import outages
from aether_common.errors import Unavailable
from aether_common.events.dlq import best_envelope, dead_letter, park
from aether_common.events.envelope import Event, MalformedEvent, event_from_record
from aether_common.events.idempotency import IdempotencyStore
from aether_common.events.producer import EventProducer
from aether_common.logging import get_logger
from aether_common.metrics import KAFKA_CONSUMED, KAFKA_CONSUMER_LAG, KAFKA_HANDLE_LATENCY

log = get_logger(__name__)
tracer = trace.get_tracer("aether.events")

T = TypeVar("T")
M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class HandleContext(Generic[T]):
    """What a handler gets besides the event: the store's transaction and where the record is."""

    tx: T
    group: str
    topic: str
    partition: int
    offset: int
    attempt: int


Handler = Callable[[Event[M], HandleContext[T]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Route(Generic[T]):
    message_type: type[Message]
    handler: Handler[Any, T]
    latency: Any  # the handle-latency histogram child for this topic and group


@dataclass(frozen=True, slots=True)
class _Item(Generic[T]):
    record: Any  # aiokafka ConsumerRecord
    route: _Route[T]
    event: Event[Any]


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    max_attempts: int = 5
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    # Kafka's own default: a broker answers as soon as records arrive, and an idle consumer
    # asks twice a second. The local broker (tansu) holds every fetch this long even when
    # records are ready, so what measures event latency against it passes ~10 ms; as a default
    # that cost each idle consumer ~100 fetches a second (a tenth of a core here).
    fetch_max_wait_ms: int = 500
    max_records: int = 500
    # Records handled in one store transaction (one commit for all of them).
    batch_size: int = 100
    commit_interval_s: float = 0.05
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    auto_offset_reset: str = "earliest"
    stop_grace_s: float = 10.0
    # Handled event ids are remembered this long (a redelivery comes within minutes; a topic
    # keeps records for days), then forgotten by a purge every `purge_every_s`.
    dedup_retention_s: float = 7 * 24 * 3600.0
    purge_every_s: float = 3600.0


class _Abandon(Exception):
    """The consumer is stopping: leave the current record uncommitted."""


class _HandlerFailed(Exception):
    """Wraps an exception raised by the handler itself (as opposed to the store)."""

    def __init__(self, cause: Exception, event_id: str) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.event_id = event_id


class EventConsumer(Generic[T]):
    """Component: one group member; route topics to handlers with `add_handler` before start."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        store: IdempotencyStore[T],
        *,
        options: ConsumerOptions | None = None,
        dlq_producer: EventProducer | None = None,
        name: str | None = None,
        **kafka_options: Any,
    ) -> None:
        self.name = name or f"consumer:{group_id}"
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.store = store
        self.options = options or ConsumerOptions()
        self._kafka_options = kafka_options
        self._routes: dict[str, _Route[T]] = {}
        self._own_producer = dlq_producer is None
        self._dlq = dlq_producer or EventProducer(bootstrap, name=f"{self.name}-dlq", linger_ms=0)
        self._kafka: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Held while a batch is handled; the rebalance listener takes it to wait for that batch.
        self._lock = asyncio.Lock()
        self._assigned: set[TopicPartition] = set()
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._next_purge = 0.0

    def add_handler(self, topic: str, message_type: type[M], handler: Handler[M, T]) -> None:
        if self._kafka is not None:
            raise RuntimeError("add handlers before start()")
        latency = KAFKA_HANDLE_LATENCY.labels(topic, self.group_id)
        self._routes[topic] = _Route(message_type, handler, latency)

    @property
    def topics(self) -> list[str]:
        return list(self._routes)

    # -- Component ----------------------------------------------------------------------------
    async def start(self) -> None:
        if not self._routes:
            raise RuntimeError(f"{self.name}: no handlers")
        if self._own_producer:
            await self._dlq.start()
        opts = self.options
        kafka = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=opts.auto_offset_reset,
            fetch_max_wait_ms=opts.fetch_max_wait_ms,
            session_timeout_ms=opts.session_timeout_ms,
            heartbeat_interval_ms=opts.heartbeat_interval_ms,
            **self._kafka_options,
        )
        kafka.subscribe(self.topics, listener=_Rebalance(self))
        await kafka.start()
        self._kafka = kafka
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Finish the batch in flight, commit what was handled, leave the group."""
        task, self._task = self._task, None
        self._stopping.set()
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), self.options.stop_grace_s)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._kafka is not None:
            await self._commit(self._assigned)
        await self._shutdown()

    async def abort(self) -> None:
        """Stop at once without finishing or committing anything: what a crash leaves behind."""
        task, self._task = self._task, None
        self._stopping.set()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._uncommitted.clear()
        await self._shutdown()

    async def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _shutdown(self) -> None:
        kafka, self._kafka = self._kafka, None
        if kafka is not None:
            await kafka.stop()
        self._assigned.clear()
        if self._own_producer:
            await self._dlq.stop()

    # -- loop ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._loop()
        except Exception:
            log.exception("consumer loop died", group=self.group_id)  # ready() turns false
            raise

    async def _loop(self) -> None:
        assert self._kafka is not None
        opts = self.options
        step = opts.batch_size
        while not self._stopping.is_set():
            batches = await self._kafka.getmany(
                timeout_ms=200, max_records=self.options.max_records
            )
            # Partitions are independent, so their records can share one store transaction;
            # within a partition the order is kept.
            records = [record for part in batches.values() for record in part]
            for first in range(0, len(records), step):
                async with self._lock:
                    if self._stopping.is_set():
                        break
                    # A partition revoked meanwhile is skipped: its new owner re-reads it.
                    chunk = [
                        r
                        for r in records[first : first + step]
                        if TopicPartition(r.topic, r.partition) in self._assigned
                    ]
                    try:
                        await self._process(chunk)
                    except _Abandon:
                        return
            # Commits trail handling by at most commit_interval_s (one round trip saved per
            # batch); a crash in between only re-delivers records the store recognises.
            if not records or time.monotonic() - self._last_commit >= opts.commit_interval_s:
                await self._commit(self._assigned)
                self._last_commit = time.monotonic()
                self._report_lag()
            if time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + opts.purge_every_s
                await self._purge_processed()

    async def _purge_processed(self) -> None:
        """Every member purges (a DELETE by an indexed time: harmless when repeated)."""
        try:
            purged = await self.store.purge(timedelta(seconds=self.options.dedup_retention_s))
        except Exception as exc:  # a later round tries again; consuming must go on
            log.warning("purging handled event ids failed", group=self.group_id, error=repr(exc))
            return
        if purged:
            log.info("forgot handled event ids", group=self.group_id, ids=purged)

    async def _process(self, records: list[Any]) -> None:
        """Handle records in order; a malformed one goes to the DLQ between the runs around it."""
        run: list[_Item[T]] = []
        for record in records:
            route = self._routes[record.topic]
            try:
                event = event_from_record(record.headers, record.value, route.message_type)
            except MalformedEvent as exc:
                await self._handle_run(run)
                run = []
                log.warning(
                    "malformed record", topic=record.topic, offset=record.offset, error=str(exc)
                )
                await self._dead_letter(record, best_envelope(record), exc, attempts=0)
                self._done(record)
                continue
            run.append(_Item(record, route, event))
        await self._handle_run(run)

    def _done(self, record: Any) -> None:
        self._uncommitted[TopicPartition(record.topic, record.partition)] = record.offset + 1

    async def _handle_run(self, run: list[_Item[T]]) -> None:
        """One transaction for the whole run; if anything fails, one record at a time."""
        failed_id = None
        if len(run) > 1:
            try:
                await self._handle_together(run)
            except _HandlerFailed as failed:
                failed_id = failed.event_id  # that attempt counts: its retries start at 2
                log.info(
                    "batch rolled back; handling its records one by one",
                    event_id=failed_id,
                    error=repr(failed.cause),
                )
            except Exception as exc:
                log.warning(
                    "idempotency store failed; handling records one by one", error=repr(exc)
                )
            else:
                for item in run:
                    self._done(item.record)
                return
        for item in run:
            tried = 1 if item.event.id == failed_id else 0
            await self._handle_alone(item.route, item.record, item.event, tried)
            self._done(item.record)

    async def _handle_together(self, run: list[_Item[T]]) -> None:
        outcomes: Counter[tuple[str, str]] = Counter()
        async with self.store.claim(self.group_id, [item.event.id for item in run]) as claim:
            todo = set(claim.fresh)
            for item in run:
                if item.event.id in todo:
                    todo.discard(item.event.id)  # the same id twice in one batch: handle it once
                    await self._invoke(item.route, claim.tx, item.record, item.event, attempt=1)
                    outcomes[item.record.topic, "handled"] += 1
                else:
                    outcomes[item.record.topic, "duplicate"] += 1
        for (topic, outcome), count in outcomes.items():
            KAFKA_CONSUMED.labels(topic, self.group_id, outcome).inc(count)

    async def _handle_alone(
        self, route: _Route[T], record: Any, event: Event[Any], tried: int = 0
    ) -> None:
        """One record in its own transaction: retried with backoff, then parked on the DLQ."""
        attempt, store_failures = tried, 0
        if tried:
            await self._backoff(tried)
        while True:
            attempt += 1
            try:
                async with self.store.claim(self.group_id, [event.id]) as claim:
                    if event.id not in claim.fresh:
                        KAFKA_CONSUMED.labels(record.topic, self.group_id, "duplicate").inc()
                        return
                    await self._invoke(route, claim.tx, record, event, attempt)
                KAFKA_CONSUMED.labels(record.topic, self.group_id, "handled").inc()
                return
            except _HandlerFailed as failed:
                if attempt >= self.options.max_attempts:
                    envelope = event.to_envelope()
                    await self._dead_letter(record, envelope, failed.cause, attempts=attempt)
                    return
                KAFKA_CONSUMED.labels(record.topic, self.group_id, "retried").inc()
                log.warning(
                    "handler failed; retrying",
                    topic=record.topic,
                    event_id=event.id,
                    attempt=attempt,
                    error=repr(failed.cause),
                )
                await self._backoff(attempt)
            except Exception as exc:  # a datastore, not the record: retry until it recovers
                attempt -= 1
                store_failures += 1
                log.warning(
                    "datastore unavailable; retrying",
                    topic=record.topic,
                    event_id=event.id,
                    error=repr(exc),
                )
                await self._backoff(store_failures)

    async def _invoke(
        self, route: _Route[T], tx: T, record: Any, event: Event[Any], attempt: int
    ) -> None:
        ctx = HandleContext(
            tx, self.group_id, record.topic, record.partition, record.offset, attempt
        )
        started = time.perf_counter()
        try:
            if _tracing():
                with tracer.start_as_current_span(
                    f"{record.topic} process",
                    context=event.trace_context(),
                    kind=SpanKind.CONSUMER,
                    attributes={
                        "messaging.system": "kafka",
                        "messaging.destination.name": record.topic,
                        "messaging.message.id": event.id,
                        "messaging.consumer.group.name": self.group_id,
                        "aether.attempt": attempt,
                    },
                ):
                    await route.handler(event, ctx)
            else:  # no tracer configured: skip the no-op span, it costs per event
                await route.handler(event, ctx)
        except Exception as exc:
            if isinstance(exc, Unavailable) or outages.classify(exc) is not None:
                raise  # a datastore away, not a bad record: retried like the store, no DLQ
            raise _HandlerFailed(exc, event.id) from exc
        finally:
            route.latency.observe(time.perf_counter() - started)

    async def _dead_letter(
        self, record: Any, envelope: EventEnvelope, exc: Exception, *, attempts: int
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        letter = dead_letter(record, envelope, error, group=self.group_id, attempts=attempts)
        await park(self._dlq, record, letter, self._backoff)
        KAFKA_CONSUMED.labels(record.topic, self.group_id, "dead_lettered").inc()
        log.error(
            "record parked on the DLQ",
            topic=record.topic,
            offset=record.offset,
            event_id=envelope.id,
            attempts=attempts,
            error=error,
        )

    async def _backoff(self, attempt: int) -> None:
        delay = min(self.options.backoff_s * 2 ** (attempt - 1), self.options.max_backoff_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        if self._stopping.is_set():
            raise _Abandon

    # -- offsets ------------------------------------------------------------------------------
    async def _commit(self, partitions: Iterable[TopicPartition]) -> None:
        wanted = set(partitions)
        offsets = {tp: off for tp, off in self._uncommitted.items() if tp in wanted}
        if not offsets or self._kafka is None:
            return
        try:
            await self._kafka.commit(offsets)
        except KafkaError as exc:  # e.g. mid-rebalance: the records come again, de-duplicated
            log.warning("offset commit failed", group=self.group_id, error=repr(exc))
            return
        for tp, off in offsets.items():
            if self._uncommitted.get(tp) == off:
                del self._uncommitted[tp]
            self._committed[tp] = off

    def _report_lag(self) -> None:
        if self._kafka is None:
            return
        for tp in self._assigned:
            high = self._kafka.highwater(tp)
            done = self._committed.get(tp)
            if high is not None and done is not None:
                KAFKA_CONSUMER_LAG.labels(tp.topic, str(tp.partition), self.group_id).set(
                    max(0, high - done)
                )

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # waits for the batch in flight
            await self._commit(revoked)
            self._assigned -= revoked
            for tp in revoked:
                self._uncommitted.pop(tp, None)
                self._committed.pop(tp, None)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assigned |= assigned


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, owner: EventConsumer[Any]) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._owner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._owner._on_assigned(set(assigned))


def _tracing() -> bool:
    return not isinstance(trace.get_tracer_provider(), (ProxyTracerProvider, NoOpTracerProvider))
