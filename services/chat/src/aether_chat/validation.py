"""Input checks shared by the RPCs: each failure is a ValidationFailed (INVALID_ARGUMENT) naming
the field, never a crash further down."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from aether_common.errors import ValidationFailed

# Canonical UUID text (any version); the service makes v7, clients may hold older ids.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# What auth puts in `sub` (UUIDs) and what test peers mint: short, printable, no separators
# that would clash with Redis key layout or logs.
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}")
# The idempotency key a client picks: a UUID, a ULID, a counter...
_CLIENT_MSG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
MAX_PAGE_TOKEN_CHARS = 512


def fail(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, field_errors={field: message})


def room_id(value: str, field: str = "room_id") -> str:
    if not value:
        raise fail(field, f"{field} is required")
    lowered = value.strip().lower()
    if not _UUID.fullmatch(lowered):
        raise fail(field, f"{field} is not a valid room id (a UUID)")
    return lowered


def room_ids(values: Iterable[str], field: str, limit: int) -> list[str]:
    result = list(dict.fromkeys(room_id(value, field) for value in values))
    if len(result) > limit:
        raise fail(field, f"{field}: at most {limit} rooms per call")
    return result


def user_id(value: str, field: str = "user_id") -> str:
    if not value:
        raise fail(field, f"{field} is required")
    if not _USER_ID.fullmatch(value):
        raise fail(field, f"{field} is not a valid user id")
    return value


def user_ids(values: Iterable[str], field: str, limit: int) -> list[str]:
    result = list(dict.fromkeys(user_id(value, field) for value in values))
    if len(result) > limit:
        raise fail(field, f"{field}: at most {limit} users")
    return result


def client_msg_id(value: str) -> str:
    """The client's idempotency key; empty means "no retry protection" (the service makes one)."""
    if value and not _CLIENT_MSG_ID.fullmatch(value):
        raise fail(
            "client_msg_id",
            "client_msg_id must be 1-128 characters of letters, digits and . _ : -",
        )
    return value or f"srv-{uuid.uuid4()}"


def content(value: str, max_chars: int) -> str:
    if not value.strip():
        raise fail("content", "content must not be empty")
    if len(value) > max_chars:
        raise fail("content", f"content is {len(value)} characters long; the limit is {max_chars}")
    if "\x00" in value:
        raise fail("content", "content must not contain NUL characters")
    return value


def text(value: str, field: str, *, max_chars: int, required: bool) -> str:
    stripped = value.strip()
    if required and not stripped:
        raise fail(field, f"{field} must not be empty")
    if len(stripped) > max_chars:
        raise fail(field, f"{field} is {len(stripped)} characters long; the limit is {max_chars}")
    if "\x00" in stripped:
        raise fail(field, f"{field} must not contain NUL characters")
    return stripped


def seq(value: int, field: str = "seq") -> int:
    """A message seq that must name a message (1, 2, 3...)."""
    if value <= 0:
        raise fail(field, f"{field} must be a positive message seq")
    return value


def cursor(value: int, field: str) -> int:
    """A seq cursor (0: none)."""
    if value < 0:
        raise fail(field, f"{field} must not be negative")
    return value


def limit(value: int, *, default: int, maximum: int, field: str = "limit") -> int:
    if value == 0:
        return min(default, maximum)
    if value < 0 or value > maximum:
        raise fail(field, f"{field} must be between 1 and {maximum} (0 for the default)")
    return value


# -- opaque page tokens ------------------------------------------------------------------------
def encode_token(data: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def decode_token(value: str, field: str = "page_token") -> Any:
    """What `encode_token` wrapped; anything else is INVALID_ARGUMENT."""
    if len(value) > MAX_PAGE_TOKEN_CHARS:
        raise fail(field, f"{field} is not valid")
    try:
        return orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise fail(field, f"{field} is not valid") from None
