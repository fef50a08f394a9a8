"""Topics declared in code and created idempotently, each with its `<topic>.dlq` beside it.

Services list their TopicSpecs once; `ensure_topics` runs at start (and again from the outbox
relay when a broker comes back without them), creating what is missing and leaving what exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from aether_common.logging import get_logger

log = get_logger(__name__)

DLQ_SUFFIX = ".dlq"
TOPIC_ALREADY_EXISTS = 36
DAY_MS = 24 * 3600 * 1000


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One event topic. Retention is per topic because audit and market data differ widely."""

    name: str
    partitions: int = 3
    retention_ms: int = 7 * DAY_MS
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)
    # Parked records wait for a person, so they are kept longer than the events themselves.
    dlq_retention_ms: int = 14 * DAY_MS
    with_dlq: bool = True

    def new_topics(self) -> list[NewTopic]:
        main = NewTopic(
            self.name,
            self.partitions,
            self.replication_factor,
            topic_configs={"retention.ms": str(self.retention_ms), **self.config},
        )
        if not self.with_dlq:
            return [main]
        dlq = NewTopic(
            dlq_topic(self.name),
            self.partitions,
            self.replication_factor,
            topic_configs={"retention.ms": str(self.dlq_retention_ms)},
        )
        return [main, dlq]


async def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec], *, timeout_ms: int = 10_000
) -> list[str]:
    """Create every missing topic (and DLQ); returns the names created. Safe to run concurrently."""
    wanted = {t.name: t for spec in specs for t in spec.new_topics()}
    if not wanted:
        return []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for name, topic in wanted.items() if name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(missing, timeout_ms=timeout_ms)
    finally:
        await admin.close()
    created: list[str] = []
    for error in response.topic_errors:  # (name, code[, message]) depending on the version
        name, code = error[0], error[1]
        if code == 0:
            created.append(name)
        elif code != TOPIC_ALREADY_EXISTS:  # another replica won the race: fine
            detail = error[2] if len(error) > 2 else ""
            raise RuntimeError(f"cannot create topic {name}: error {code} {detail or ''}")
    if created:
        log.info("topics created", topics=created)
    return created
