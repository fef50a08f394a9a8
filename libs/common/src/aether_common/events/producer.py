"""EventProducer: publishes events (protobuf value, envelope headers, entity-id key) to Kafka.

Services rarely call it directly: state changes go through the outbox, whose relay uses it.
acks=all so an acknowledged event survives a broker failover; a short linger batches bursts
without adding noticeable latency. Idempotence stays off by default: the local broker (tansu)
refuses InitProducerId, and ordering per partition already holds because aiokafka keeps one
batch in flight per partition. Pass `enable_idempotence=True` where the brokers support it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from aether.events.v1.envelope_pb2 import EventEnvelope
from aether_common.events.envelope import Event, envelope_headers
from aether_common.metrics import KAFKA_PRODUCED

Delivery = asyncio.Future[Any]  # resolves to aiokafka's RecordMetadata once the broker acks

_partitioner = DefaultPartitioner()


class EventProducer:
    """A Component owning one AIOKafkaProducer."""

    def __init__(
        self,
        bootstrap: str,
        *,
        name: str = "event-producer",
        client_id: str = "aether",
        linger_ms: int = 5,
        request_timeout_ms: int = 10_000,
        max_batch_size: int = 256 * 1024,
        **kafka_options: Any,
    ) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": False,
            "linger_ms": linger_ms,
            "request_timeout_ms": request_timeout_ms,
            "max_batch_size": max_batch_size,
            **kafka_options,
        }
        self._producer: AIOKafkaProducer | None = None
        self._counters: dict[str, tuple[Any, Any]] = {}

    async def start(self) -> None:
        producer = AIOKafkaProducer(**self._options)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what is queued first

    async def ready(self) -> bool:
        return self._producer is not None

    async def publish(self, event: Event[Any]) -> None:
        """Send one event and wait for the broker's ack."""
        await (await self.send_envelope(event.to_envelope()))

    async def send_envelope(self, envelope: EventEnvelope) -> Delivery:
        """Queue an envelope; returns its delivery future (order is kept per partition)."""
        return await self.send_raw(
            envelope.type,
            envelope.data,
            key=envelope.subject.encode(),
            headers=envelope_headers(envelope),
        )

    async def send_envelopes(self, envelopes: Sequence[EventEnvelope]) -> list[Delivery]:
        """Queue many envelopes at once, in order; returns one delivery future per envelope.

        Records are packed into one batch per partition (partitioned by key exactly as a plain
        send would), so a busy outbox relay pays aiokafka's per-record overhead once per batch.
        Envelopes sharing a batch share its future.
        """
        producer = self._started()
        partitions: dict[str, list[int]] = {}
        routes: dict[tuple[str, bytes], int] = {}
        open_batches: dict[tuple[str, int], tuple[Any, list[int]]] = {}
        deliveries: list[Delivery | None] = [None] * len(envelopes)

        async def submit(topic: str, partition: int, batch: Any, members: list[int]) -> None:
            batch.close()  # complete already: a closed batch skips the linger
            delivery: Delivery = await producer.send_batch(batch, topic, partition=partition)
            delivery.add_done_callback(self._counter(topic, len(members)))
            for index in members:
                deliveries[index] = delivery

        for index, envelope in enumerate(envelopes):
            topic, key = envelope.type, envelope.subject.encode()
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = routes.get((topic, key))
            if partition is None:
                all_partitions = partitions[topic]
                partition = routes[topic, key] = _partitioner(key, all_partitions, all_partitions)
            batch, members = open_batches.get((topic, partition)) or (producer.create_batch(), [])
            headers = envelope_headers(envelope)
            if batch.append(key=key, value=envelope.data, timestamp=None, headers=headers) is None:
                await submit(topic, partition, batch, members)  # full: send it, start another
                batch, members = producer.create_batch(), []
                if (
                    batch.append(key=key, value=envelope.data, timestamp=None, headers=headers)
                    is None
                ):
                    raise ValueError(f"event {envelope.id} is larger than max_batch_size")
            members.append(index)
            open_batches[topic, partition] = (batch, members)
        for (topic, partition), (batch, members) in open_batches.items():
            await submit(topic, partition, batch, members)
        return [delivery for delivery in deliveries if delivery is not None]

    async def send_raw(
        self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Delivery:
        producer = self._started()
        try:
            delivery: Delivery = await producer.send(topic, value, key=key, headers=headers)
        except Exception:
            KAFKA_PRODUCED.labels(topic=topic, outcome="error").inc()
            raise
        delivery.add_done_callback(self._counter(topic))
        return delivery

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._producer

    def _counter(self, topic: str, records: int = 1) -> Callable[[Delivery], None]:
        """A done-callback counting `records` outcomes for `topic`."""
        counters = self._counters.get(topic)
        if counters is None:  # label lookups cost more than the increment: cache them
            counters = self._counters[topic] = (
                KAFKA_PRODUCED.labels(topic=topic, outcome="ok"),
                KAFKA_PRODUCED.labels(topic=topic, outcome="error"),
            )
        ok, error = counters

        def count(delivery: Delivery) -> None:
            failed = delivery.cancelled() or delivery.exception() is not None
            (error if failed else ok).inc(records)

        return count

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()
