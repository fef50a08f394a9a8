"""The gRPC edge's conversions: memory.v1 requests into the service's plain records, and its
results (stored rows, hits, vectors) back into memory.v1 messages. Nothing else touches protobuf
(chat's event payloads are read in consumers.py the same way)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from aether.chat.v1 import chat_pb2
from aether.memory.v1 import memory_pb2
from aether_memory import validation
from aether_memory.service import ChatMessage, Embedded, Found, RecordInput, SearchQuery


def record_inputs(request: memory_pb2.UpsertRequest) -> list[RecordInput]:
    return [
        RecordInput(r.id, r.text, json_format.MessageToDict(r.metadata)) for r in request.records
    ]


def search_query(request: memory_pb2.SearchRequest) -> SearchQuery:
    return SearchQuery(
        namespace=request.namespace,
        query=request.query,
        limit=request.limit,
        min_score=request.min_score,
        created_after=(
            validation.moment(request.created_after, "created_after")
            if request.HasField("created_after")
            else None
        ),
        created_before=(
            validation.moment(request.created_before, "created_before")
            if request.HasField("created_before")
            else None
        ),
        room_id=request.room_id,
        user_id=request.user_id,
    )


def search_response(found: list[Found]) -> memory_pb2.SearchResponse:
    return memory_pb2.SearchResponse(
        hits=[memory_pb2.SearchHit(record=record_pb(f.row), score=f.score) for f in found]
    )


def embed_response(embedded: Embedded) -> memory_pb2.EmbedResponse:
    return memory_pb2.EmbedResponse(
        model=embedded.model,
        dimensions=embedded.dimensions,
        vectors=[memory_pb2.Vector(values=vector) for vector in embedded.vectors],
    )


def chat_message(message: chat_pb2.Message) -> ChatMessage:
    return ChatMessage(
        message_id=message.message_id,
        room_id=message.room_id,
        sender_id=message.sender_id,
        seq=message.seq,
        content=message.content,
        deleted=message.deleted,
        created_at=(
            validation.moment(message.created_at, "created_at")
            if message.HasField("created_at")
            else None
        ),
    )


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
