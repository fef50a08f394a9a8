"""Input checks with the proto's limits; each failure is INVALID_ARGUMENT naming its field."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf import timestamp_pb2

from aether_common.errors import ValidationFailed

_RECORD_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_ROOM_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_USER_ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")


def fail(field: str, detail: str) -> ValidationFailed:
    return ValidationFailed(detail, field_errors={field: detail})


def record_id(value: str, field: str) -> str:
    """A client-chosen id, or a new one when empty."""
    if not value:
        return str(uuid.uuid4())
    if not _RECORD_ID.fullmatch(value):
        raise fail(field, f"{field} must be 1-128 characters of A-Z a-z 0-9 _ . : -")
    return value


def existing_ids(values: Sequence[str], limit: int) -> list[str]:
    """Ids to delete: at least one, at most `limit`, each well-formed (duplicates dropped)."""
    if not values:
        raise fail("ids", "ids: give at least one id")
    if len(values) > limit:
        raise fail("ids", f"ids: at most {limit} per call (got {len(values)})")
    for n, value in enumerate(values):
        if not value or not _RECORD_ID.fullmatch(value):
            raise fail(f"ids[{n}]", f"ids[{n}] must be 1-128 characters of A-Z a-z 0-9 _ . : -")
    return list(dict.fromkeys(values))


def text(value: str, field: str, limit: int) -> str:
    if not value.strip():
        raise fail(field, f"{field} must not be empty")
    if len(value) > limit:
        raise fail(field, f"{field} is {len(value)} characters; at most {limit}")
    return value


def texts(values: Sequence[str], field: str, *, max_count: int, max_chars: int) -> list[str]:
    if not values:
        raise fail(field, f"{field}: give at least one")
    if len(values) > max_count:
        raise fail(field, f"{field}: at most {max_count} per call (got {len(values)})")
    return [text(value, f"{field}[{n}]", max_chars) for n, value in enumerate(values)]


def metadata(value: dict[str, Any], field: str, limit: int) -> dict[str, Any]:
    """At most `limit` bytes of compact JSON."""
    size = len(orjson.dumps(value))
    if size > limit:
        raise fail(field, f"{field} is {size} bytes of JSON; at most {limit}")
    return value


def room_id(value: str, field: str = "room_id") -> str:
    """A chat room id (a UUID, as chat makes them)."""
    lowered = value.strip().lower()
    if not _ROOM_ID.fullmatch(lowered):
        raise fail(field, f"{field} is not a valid room id (a UUID)")
    return lowered


def user_id(value: str, field: str = "user_id") -> str:
    if not _USER_ID.fullmatch(value):
        raise fail(field, f"{field} is not a valid user id")
    return value


def limit(value: int, *, default: int, maximum: int) -> int:
    if value == 0:
        return default
    if not 1 <= value <= maximum:
        raise fail("limit", f"limit must be 1-{maximum} (0 for {default}); got {value}")
    return value


def min_score(value: float) -> float | None:
    """None when 0 (keep every hit)."""
    if math.isnan(value) or not -1.0 <= value <= 1.0:
        raise fail("min_score", f"min_score must be a cosine similarity in -1..1; got {value}")
    return value if value != 0 else None


def moment(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise fail(field, f"{field} is not a valid time") from exc


def time_range(
    after: datetime | None, before: datetime | None
) -> tuple[datetime | None, datetime | None]:
    if after is not None and before is not None and after >= before:
        raise fail("created_before", "created_before must be later than created_after")
    return after, before
