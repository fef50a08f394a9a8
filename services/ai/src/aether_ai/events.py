"""The events the AI service publishes and consumes (docs/events.md): topic = type, key = user id.

Published: `aether.ai.request.completed.v1` (aether.ai.v1.RequestCompleted), one per answered
request, written to the PostgreSQL outbox in the transaction that records the usage and drained
to Kafka by the relay. Consumed: auth's `aether.user.deleted.v1` (consumers.py).
"""

from __future__ import annotations

from aether.ai.v1 import events_pb2
from aether_common.events import Event, EventProducer, PgOutboxRelay, RelayOptions, TopicSpec
from aether_common.lifecycle import Component
from aether_common.postgres import PostgresDatabase

SOURCE = "ai"

REQUEST_COMPLETED = "aether.ai.request.completed.v1"
USER_DELETED = "aether.user.deleted.v1"

TOPICS = (REQUEST_COMPLETED,)


def topic_specs(prefix: str = "") -> list[TopicSpec]:
    """The topics this service owns (created by the relay at start, each with its DLQ)."""
    return [TopicSpec(prefix + topic) for topic in TOPICS]


def request_completed(
    payload: events_pb2.RequestCompleted, topic_prefix: str = ""
) -> Event[events_pb2.RequestCompleted]:
    return Event(
        type=topic_prefix + REQUEST_COMPLETED,
        subject=payload.user_id,
        payload=payload,
        source=SOURCE,
    )


def build_relay(
    db: PostgresDatabase, producer: EventProducer, *, topic_prefix: str = "", poll_s: float = 0.05
) -> Component:
    """The outbox relay, started after `db` (whose migrations create the outbox) and `producer`;
    it polls every `poll_s` while events flow."""
    return PgOutboxRelay(
        db.dsn,
        producer,
        topics=topic_specs(topic_prefix),
        options=RelayOptions(active_poll_s=poll_s),
    )
