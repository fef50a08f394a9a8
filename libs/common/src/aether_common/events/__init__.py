"""Events on Kafka: envelope, producer, topics, transactional outboxes and the consumer framework.

Write side: `outbox_pg.add(conn, event)` / `outbox_mongo.add(db, session, event)` inside the
transaction that changes state, and run a relay (`PgOutboxRelay`, `MongoOutboxRelay`) beside an
`EventProducer`: delivery is at-least-once, in outbox order per key. Read side: an
`EventConsumer` with an idempotency store and handlers per topic: offsets are committed after
handling, each event id is handled once per group, poison records are parked on `<topic>.dlq`.
Each module's docstring states its guarantees; bench/events.py measures the pipeline.
"""

from aether_common.events import outbox_mongo, outbox_pg
from aether_common.events.background import BackgroundConsumer
from aether_common.events.consumer import ConsumerOptions, EventConsumer, HandleContext, Handler
from aether_common.events.envelope import (
    Event,
    MalformedEvent,
    decode_event,
    envelope_from_record,
    envelope_headers,
    event_from_record,
)
from aether_common.events.idempotency import (
    PROCESSED_EVENTS_DDL,
    Claim,
    IdempotencyStore,
    MongoIdempotencyStore,
    PgIdempotencyStore,
)
from aether_common.events.outbox_mongo import MongoOutboxRelay
from aether_common.events.outbox_pg import OUTBOX_DDL, PgOutboxRelay
from aether_common.events.producer import EventProducer
from aether_common.events.relay import OutboxRelay, RelayOptions
from aether_common.events.topics import TopicSpec, dlq_topic, ensure_topics

__all__ = [
    "OUTBOX_DDL",
    "PROCESSED_EVENTS_DDL",
    "BackgroundConsumer",
    "Claim",
    "ConsumerOptions",
    "Event",
    "EventConsumer",
    "EventProducer",
    "HandleContext",
    "Handler",
    "IdempotencyStore",
    "MalformedEvent",
    "MongoIdempotencyStore",
    "MongoOutboxRelay",
    "OutboxRelay",
    "PgIdempotencyStore",
    "PgOutboxRelay",
    "RelayOptions",
    "TopicSpec",
    "decode_event",
    "dlq_topic",
    "ensure_topics",
    "envelope_from_record",
    "envelope_headers",
    "event_from_record",
    "outbox_mongo",
    "outbox_pg",
]
