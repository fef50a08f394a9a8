"""The GDPR export every service answers in ExportMyData: one versioned JSON document of
everything the service holds about the caller (docs/worker.md, `gdpr.export` zips them).

A service's document subclasses `ExportDocument` (its `service` and its sections). An export is
complete or it is refused: a service streams each section's records through `collect` (a
limit per section, checked as they arrive) and encodes with `encode` (a limit on the JSON's
size); both raise `ExportTooLarge` (FAILED_PRECONDITION, code `export_too_large`, naming the section
and the limit) rather than leave anything out.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, Field

from aether_common.errors import PreconditionFailed

T = TypeVar("T")

EXPORT_VERSION = 1


class ExportTooLarge(PreconditionFailed):
    code = "export_too_large"


class ExportDocument(BaseModel):
    """The header every service's export starts with."""

    service: str
    version: int = EXPORT_VERSION
    user_id: str
    exported_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def too_large(section: str, limit: int, unit: str = "records") -> ExportTooLarge:
    return ExportTooLarge(
        f"the export's {section} exceed {limit} {unit}; it is refused rather than cut short "
        "(raise the service's EXPORT_MAX_* setting)",
        metadata={"section": section, "limit": str(limit)},
    )


async def collect(records: AsyncIterable[T], *, section: str, limit: int) -> list[T]:
    """Every record of `records`, or ExportTooLarge as soon as there are more than `limit`."""
    collected: list[T] = []
    async for record in records:
        if len(collected) >= limit:
            raise too_large(section, limit)
        collected.append(record)
    return collected


def encode(document: ExportDocument, *, max_bytes: int) -> str:
    """The document as JSON, or ExportTooLarge past `max_bytes` (what the caller's gRPC channel
    must accept: grpc.max_receive_message_length)."""
    text = document.model_dump_json()
    if len(text.encode()) > max_bytes:
        raise too_large("document", max_bytes, unit="bytes")
    return text
