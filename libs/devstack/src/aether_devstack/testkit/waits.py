"""Waiting for what a test expects: a condition, Kafka records, a mail."""

from __future__ import annotations

import asyncio
import inspect
import mailbox
import time
from collections.abc import Callable
from email.message import Message as Mail
from pathlib import Path
from typing import Any


async def eventually(
    check: Callable[[], object],
    within: float = 10.0,
    what: str = "the condition",
    every: float = 0.05,
) -> Any:
    """Poll `check()` (sync or async) until it gives something truthy, and return that; fail
    after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)


async def read_topic(
    bootstrap: str, topic: str, count: int, within: float = 20.0, settle: float = 0.0
) -> list[Any]:
    """Records of `topic` from the beginning, with a real consumer (no group: no join delay),
    until `count` arrived; with `settle`, then what else arrives within `settle` seconds."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + within
    # A consumer learns the partitions of the topics that exist when it starts, not of one
    # created later (a relay creates its topics in the background): wait for it first.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while topic not in await admin.list_topics():
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"the consumer does not know {topic}"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        while len(records) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"got {len(records)} of {count} records from {topic}"
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.2) * 1000))
            for part in batch.values():
                records.extend(part)
        if settle:  # then make sure nothing more is coming
            await asyncio.sleep(settle)
            for part in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


def mails_to(maildir: Path, to: str, subject: str | None = None) -> list[Mail]:
    """The mails to `to` (with `subject`, if given) that the local SMTP server stored, in order."""
    box = mailbox.Maildir(maildir, create=False)
    return [m for m in box if m["To"] == to and (subject is None or m["Subject"] == subject)]


def latest_mail(maildir: Path, to: str, subject: str) -> Mail | None:
    """The newest mail to `to` with `subject`, if any."""
    found = mails_to(maildir, to, subject)
    return found[-1] if found else None


def wait_for_mail(maildir: Path, to: str, subject: str, within: float = 10.0) -> Mail:
    deadline = time.monotonic() + within
    while (mail := latest_mail(maildir, to, subject)) is None:
        assert time.monotonic() < deadline, f"no mail {subject!r} to {to} in {within} s"
        time.sleep(0.05)
    return mail


async def await_mail(maildir: Path, to: str, subject: str, within: float = 10.0) -> Mail:
    """`wait_for_mail` without blocking the event loop."""
    deadline = time.monotonic() + within
    while (mail := latest_mail(maildir, to, subject)) is None:
        assert time.monotonic() < deadline, f"no mail {subject!r} to {to} in {within} s"
        await asyncio.sleep(0.05)
    return mail
