"""Ids and times as the chat service stores them.

Room and message ids are UUIDv7 (RFC 9562): the creation time in milliseconds leads, so their
canonical text sorts by time. Retention deletes messages by an `_id` range (no extra index), and
ids stay opaque UUIDs for clients. Times are UTC with millisecond precision: what MongoDB keeps,
so an answer built before the write equals what a later read returns.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime

_TS_MASK = (1 << 48) - 1
_RAND_B = (1 << 62) - 1


def new_id(at_ms: int | None = None) -> str:
    """A UUIDv7 string (48-bit ms timestamp, version 7, 74 random bits)."""
    ms = time.time_ns() // 1_000_000 if at_ms is None else at_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms & _TS_MASK) << 80
        | 0x7 << 76
        | ((rand >> 64) & 0xFFF) << 64
        | 0b10 << 62
        | (rand & _RAND_B)
    )
    return str(uuid.UUID(int=value))


def id_floor(moment: datetime) -> str:
    """The smallest UUIDv7 string of `moment`: every id made before it sorts below."""
    ms = int(moment.timestamp() * 1000)
    return str(uuid.UUID(int=(ms & _TS_MASK) << 80))


def now() -> datetime:
    """Now, UTC, truncated to the millisecond."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def rfc3339(moment: datetime) -> str:
    """`2026-01-02T03:04:05.678Z` (moments from MongoDB are UTC and millisecond-precise)."""
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
