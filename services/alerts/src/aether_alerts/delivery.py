"""Delivery of firings: a consumer that records what to deliver, a dispatcher that delivers it.

1. `DeliveryConsumer`, group `<ALERTS_CONSUMER_GROUP>-delivery` of `aether.alert.triggered.v1`
   (test firings included): for each of the firing's channels it inserts a `deliveries` row
   (in_app, email, and `webhook:<endpoint id>` per endpoint the user has, or one `webhook`
   row that fails with `no_endpoint` when there is none), in the consumer's
   transaction (with the event id in `processed_events`). PRIMARY KEY (firing_id, channel) makes
   a redelivered event, even one with another event id, add nothing. No network call here.
2. `Dispatcher`, a component on every replica: wakes on the rows' commit (LISTEN
   `alert_deliveries`, fired by 0003's trigger) and at least every `ALERTS_DELIVERY_POLL_S`,
   claims due rows (`FOR UPDATE SKIP LOCKED`, committed at once, each counted as an attempt and
   leased), sends them concurrently and records the outcome: `sent`, `retrying` at
   next_attempt_at = now + full-jitter exponential backoff, or `failed` (after
   `ALERTS_DELIVERY_MAX_ATTEMPTS`, or a failure retrying cannot fix, e.g. `no_endpoint`; a
   missing address is retried: the account's registration event may still be on its way).
   Retries are delayed re-enqueues in PostgreSQL rather than Kafka: a delay per row needs no
   extra topics, survives restarts, and the same row is the status the API shows.
   Failed rows are the dead-delivery list (metric `aether_alerts_deliveries_total{status}`);
   `ReplayDelivery` makes one due again.

Exactly once per (firing, channel) as far as the channel allows: the row is claimed before the
send and marked after it; a replica killed between the two re-sends after the lease (webhook
receivers de-duplicate on `X-Aether-Delivery`, in-app clients on the notification id).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import asyncpg

from aether.alerts.v1 import events_pb2
from aether_alerts import events, repository
from aether_alerts.channels import Email, InApp, Outcome, Webhook, firing_payload, webhook_channel
from aether_alerts.config import AlertsSettings
from aether_alerts.metrics import DELIVERIES
from aether_alerts.repository import Delivery
from aether_common import outages
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

NOTIFY_CHANNEL = "alert_deliveries"
DEFAULT_OPTIONS = ConsumerOptions(max_attempts=10, backoff_s=0.2, max_backoff_s=10.0)


class DeliveryConsumer(BackgroundConsumer):
    """Component: turns each triggered event into its delivery rows."""

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        bootstrap: str,
        group_id: str,
        topic_prefix: str = "",
        options: ConsumerOptions | None = None,
        dlq_producer: EventProducer | None = None,
    ) -> None:
        super().__init__(
            bootstrap,
            [topic_prefix + events.TRIGGERED],
            group_id=group_id,
            options=options or DEFAULT_OPTIONS,
            dlq_producer=dlq_producer,
        )
        self._database = database

    def build(self) -> EventConsumer[Any]:
        consumer = self.new_consumer(PgIdempotencyStore(self._database.pool))
        consumer.add_handler(self.topics[0], events_pb2.AlertTriggered, self.triggered)
        return consumer

    async def triggered(
        self, event: Event[events_pb2.AlertTriggered], ctx: HandleContext[Any]
    ) -> None:
        await record_deliveries(ctx.tx, event.payload)


async def record_deliveries(conn: Any, firing: events_pb2.AlertTriggered) -> int:
    """The firing's delivery rows (new ones only); answers how many were new."""
    if not firing.firing_id or not firing.user_id:
        log.warning("alert.triggered without a firing or user id; ignored")
        return 0
    payload = firing_payload(firing)
    rows: list[tuple[str, dict[str, Any]]] = []
    for channel in dict.fromkeys(firing.channels):  # each once, in order
        if channel in ("in_app", "email"):
            rows.append((channel, payload))
        elif channel == "webhook":
            endpoints = await repository.list_webhooks(conn, firing.user_id)
            # No endpoint: a plain `webhook` row, failed with `no_endpoint` (visible).
            rows += [(webhook_channel(e.id), payload) for e in endpoints] or [(channel, payload)]
        else:
            log.warning("unknown channel; skipped", channel=channel, firing_id=firing.firing_id)
    # The firing may be gone already (the user deleted the rule or the account): nothing to do.
    if not await repository.firing_exists(conn, firing.firing_id):
        return 0
    return await repository.insert_deliveries(conn, firing.firing_id, firing.user_id, rows)


def backoff_s(attempt: int, *, base_s: float, max_s: float) -> float:
    """Full jitter: uniform in [0, min(max, base * 2^(attempt-1))], at least a tenth of base."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    return max(base_s / 10, random.uniform(0, ceiling))  # noqa: S311 (jitter, not a secret)


class Dispatcher:
    """Component: delivers the due rows (see the module docstring)."""

    name = "delivery-dispatcher"

    def __init__(
        self,
        database: PostgresDatabase,
        settings: AlertsSettings,
        *,
        in_app: InApp,
        email: Email,
        webhook: Webhook,
    ) -> None:
        self._db = database
        self._s = settings
        self._in_app = in_app
        self._email = email
        self._webhook = webhook
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None
        self._limit = asyncio.Semaphore(settings.delivery_concurrency)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._unlisten()

    async def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        if self._listener is None or self._listener.is_closed():
            self._listener = await asyncpg.connect(self._db.dsn)
            await self._listener.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())

    async def _unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close()

    async def _loop(self) -> None:
        while True:
            try:
                await self._listen()
                while await self.run_once() >= self._s.delivery_batch:
                    pass  # a full batch: there may be more due now
            except Exception as exc:
                if outages.classify(exc) is not None:
                    log.warning("delivery: datastore unavailable; will retry", error=repr(exc))
                else:
                    log.exception("delivery round failed; will retry")
                await self._unlisten()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._s.delivery_poll_s)
            self._wake.clear()

    async def run_once(self) -> int:
        """Claim the due deliveries and send them; answers how many were claimed."""
        async with self._db.connection() as conn:
            due = await repository.claim_due(
                conn, limit=self._s.delivery_batch, lease_s=self._s.delivery_lease_s
            )
        if due:
            await asyncio.gather(*(self._deliver(d) for d in due))
        return len(due)

    async def _deliver(self, delivery: Delivery) -> None:
        async with self._limit:
            try:
                outcome = await self._send(delivery)
            except Exception as exc:  # a bug or an outage of our own store: retry later
                log.exception("delivery failed unexpectedly", delivery_id=delivery.id)
                outcome = Outcome("retry", f"internal: {type(exc).__name__}")
        status, retry_in = outcome.status, None
        if status == "retry":
            if delivery.attempts >= self._s.delivery_max_attempts:
                status = "failed"
            else:
                status = "retrying"
                retry_in = backoff_s(
                    delivery.attempts,
                    base_s=self._s.delivery_backoff_s,
                    max_s=self._s.delivery_max_backoff_s,
                )
        elif status == "fail":
            status = "failed"
        async with self._db.connection() as conn:
            await repository.finish_delivery(
                conn, delivery.id, status=status, error=outcome.error, retry_in_s=retry_in
            )
        kind = delivery.channel.split(":", 1)[0]
        DELIVERIES.labels(channel=kind, status=status).inc()
        if status == "failed":
            log.warning(
                "delivery failed",
                delivery_id=delivery.id,
                channel=delivery.channel,
                attempts=delivery.attempts,
                error=outcome.error,
            )

    async def _send(self, delivery: Delivery) -> Outcome:
        if delivery.channel == "in_app":
            return await self._in_app.send(delivery)
        if delivery.channel == "email":
            return await self._email.send(delivery)
        if delivery.channel.startswith("webhook:"):
            return await self._webhook.send(delivery)
        if delivery.channel == "webhook":
            return Outcome("fail", "no_endpoint")
        return Outcome("fail", f"unknown channel {delivery.channel}")
