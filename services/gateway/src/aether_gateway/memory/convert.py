"""memory's protobuf messages <-> the JSON of `/api/memory/*`."""

from __future__ import annotations

from typing import Any

from google.protobuf.struct_pb2 import Struct

from aether.memory.v1 import memory_pb2
from aether_gateway.ai.convert import score, struct, timestamp, to_timestamp
from aether_gateway.memory.schemas import RecordIn, SearchIn


def record(r: RecordIn) -> memory_pb2.Record:
    message = memory_pb2.Record(id=r.id or "", text=r.text)
    if r.metadata is not None:
        metadata = Struct()
        metadata.update(r.metadata)
        message.metadata.CopyFrom(metadata)
    return message


def search_request(body: SearchIn) -> memory_pb2.SearchRequest:
    request = memory_pb2.SearchRequest(
        namespace=body.namespace,
        query=body.query,
        limit=body.limit,
        room_id=body.room_id or "",
        min_score=body.min_score,
    )
    if body.created_after is not None:
        request.created_after.CopyFrom(to_timestamp(body.created_after))
    if body.created_before is not None:
        request.created_before.CopyFrom(to_timestamp(body.created_before))
    return request


def hit(h: memory_pb2.SearchHit) -> dict[str, Any]:
    r = h.record
    return {
        "id": r.id,
        "text": r.text,
        "score": score(h.score),
        "metadata": struct(r.metadata),
        "user_id": r.user_id,
        "room_id": r.room_id,
        "created_at": timestamp(r, "created_at"),
    }
