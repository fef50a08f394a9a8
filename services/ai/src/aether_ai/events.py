"""The events the AI service publishes and consumes (docs/events.md): topic = type, key = user id.

Published: `aether.ai.request.completed.v1` (aether.ai.v1.RequestCompleted), one per answered
request, written to the PostgreSQL outbox in the transaction that records the usage and drained
to Kafka by the relay. Consumed: auth's `aether.user.deleted.v1` (consumers.py).
"""

from __future__ import annotations

from aether.ai.v1 import events_pb2
from aether_ai.records import Completion
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
    completion: Completion, topic_prefix: str = ""
) -> Event[events_pb2.RequestCompleted]:
    return Event(
        type=topic_prefix + REQUEST_COMPLETED,
        subject=completion.user_id,
        payload=request_completed_payload(completion),
        source=SOURCE,
    )


def request_completed_payload(c: Completion) -> events_pb2.RequestCompleted:
    return events_pb2.RequestCompleted(
        request_id=c.request_id,
        user_id=c.user_id,
        conversation_id=c.conversation_id,
        kind=c.kind,
        mode=c.mode,
        model=c.model,
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        cost_usd=c.cost_usd,
        latency_ms=c.latency_ms,
        first_token_ms=c.first_token_ms,
        cached=c.cached,
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
