"""Parking a record the consumer gives up on: a DeadLetter on `<topic>.dlq`.

The value is a DeadLetter (the event's envelope, where it came from, the error, the attempts);
the headers are the original record's plus `dlq_error`, so tools can read either. Publishing is
retried until it succeeds: the consumer must not commit a record that was neither handled nor
parked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError

from aether.events.v1.envelope_pb2 import DeadLetter, EventEnvelope
from aether_common.events.envelope import (
    H_ID,
    H_SOURCE,
    H_SUBJECT,
    H_TYPE,
    MalformedEvent,
    envelope_from_record,
)
from aether_common.events.producer import EventProducer
from aether_common.events.topics import TopicSpec, dlq_topic, ensure_topics
from aether_common.logging import get_logger

log = get_logger(__name__)

DLQ_ERROR_HEADER = "dlq_error"


def dead_letter(
    record: Any, envelope: EventEnvelope, error: str, *, group: str, attempts: int
) -> DeadLetter:
    letter = DeadLetter(
        event=envelope,
        original_topic=record.topic,
        original_partition=record.partition,
        original_offset=record.offset,
        consumer_group=group,
        error=error,
        attempts=attempts,
    )
    letter.failed_time.GetCurrentTime()
    return letter


async def park(
    producer: EventProducer,
    record: Any,
    letter: DeadLetter,
    pause: Callable[[int], Awaitable[None]],
) -> None:
    """Publish `letter` for `record` and wait for the ack, retrying with `pause(try)` between."""
    headers = [*record.headers, (DLQ_ERROR_HEADER, letter.error.encode())]
    tries = 0
    while True:
        tries += 1
        try:
            delivery = await producer.send_raw(
                dlq_topic(record.topic),
                letter.SerializeToString(),
                key=record.key,
                headers=headers,
            )
            await delivery
            return
        except KafkaError as exc:
            log.warning("dead-letter publish failed; retrying", topic=record.topic, error=repr(exc))
            with contextlib.suppress(KafkaError, OSError):  # the DLQ topic may be missing
                await ensure_topics(producer.bootstrap, [TopicSpec(record.topic)])
            await pause(tries)


def best_envelope(record: Any) -> EventEnvelope:
    """Whatever a malformed record carries, so its DLQ entry is still searchable by id."""
    with contextlib.suppress(MalformedEvent):
        return envelope_from_record(record.headers, record.value)
    found: dict[str, str] = {}
    for name, raw in record.headers:
        with contextlib.suppress(UnicodeDecodeError):
            found[name] = raw.decode()
    return EventEnvelope(
        id=found.get(H_ID, ""),
        type=found.get(H_TYPE, record.topic),
        source=found.get(H_SOURCE, ""),
        subject=found.get(H_SUBJECT, ""),
        data=record.value or b"",
    )
