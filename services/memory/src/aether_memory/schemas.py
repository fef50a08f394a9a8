"""Wire shapes: stored rows as memory.v1 messages."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from aether.memory.v1 import memory_pb2


def record_pb(row: Any) -> memory_pb2.Record:
    """A `memory_records` row (id, user_id, room_id, text, metadata, created_at)."""
    metadata = struct_pb2.Struct()
    metadata.update(row["metadata"] or {})
    record = memory_pb2.Record(
        id=row["id"],
        text=row["text"],
        metadata=metadata,
        user_id=row["user_id"],
        room_id=row["room_id"],
    )
    record.created_at.FromDatetime(row["created_at"])
    return record
