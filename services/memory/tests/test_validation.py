"""Bad input is INVALID_ARGUMENT naming the field, with the proto's limits, never a 500."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from aether.memory.v1 import memory_pb2
from aether_common.errors import ValidationFailed


def rec(text: str = "fine", record_id: str = "", **metadata: Any) -> memory_pb2.Record:
    meta = struct_pb2.Struct()
    meta.update(metadata)
    return memory_pb2.Record(id=record_id, text=text, metadata=meta)


def upsert(*records: memory_pb2.Record, namespace: str = "memories") -> memory_pb2.UpsertRequest:
    return memory_pb2.UpsertRequest(namespace=namespace, records=records)


def search(**fields: Any) -> memory_pb2.SearchRequest:
    fields.setdefault("namespace", "memories")
    fields.setdefault("query", "what did I note?")
    return memory_pb2.SearchRequest(**fields)


def at(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


CASES: list[tuple[str, str, Any, str, str]] = [
    # (case, rpc, request, field, words in the message)
    (
        "unknown namespace",
        "Upsert",
        upsert(rec(), namespace="diary"),
        "namespace",
        "unknown namespace",
    ),
    ("no namespace", "Search", search(namespace=""), "namespace", "required"),
    ("no records", "Upsert", upsert(), "records", "at least one"),
    ("too many records", "Upsert", upsert(*[rec() for _ in range(257)]), "records", "at most 256"),
    ("empty text", "Upsert", upsert(rec("")), "records[0].text", "must not be empty"),
    (
        "blank text",
        "Upsert",
        upsert(rec("ok"), rec("  \n")),
        "records[1].text",
        "must not be empty",
    ),
    ("oversize text", "Upsert", upsert(rec("x" * 8001)), "records[0].text", "at most 8000"),
    ("bad id", "Upsert", upsert(rec(record_id="no spaces")), "records[0].id", "1-128 characters"),
    ("long id", "Upsert", upsert(rec(record_id="a" * 129)), "records[0].id", "1-128 characters"),
    (
        "duplicate id",
        "Upsert",
        upsert(rec(record_id="a"), rec(record_id="a")),
        "records[1].id",
        "twice",
    ),
    (
        "big metadata",
        "Upsert",
        upsert(rec(blob="y" * 17000)),
        "records[0].metadata",
        "at most 16384",
    ),
    ("no ids", "Delete", memory_pb2.DeleteRequest(namespace="memories"), "ids", "at least one"),
    (
        "bad delete id",
        "Delete",
        memory_pb2.DeleteRequest(namespace="memories", ids=["a/b"]),
        "ids[0]",
        "1-128",
    ),
    ("empty query", "Search", search(query=""), "query", "must not be empty"),
    ("oversize query", "Search", search(query="q" * 2001), "query", "at most 2000"),
    ("limit too high", "Search", search(limit=51), "limit", "1-50"),
    ("negative limit", "Search", search(limit=-1), "limit", "1-50"),
    ("min_score out of range", "Search", search(min_score=1.5), "min_score", "-1..1"),
    ("min_score NaN", "Search", search(min_score=float("nan")), "min_score", "-1..1"),
    (
        "empty time window",
        "Search",
        search(created_after=at(2000), created_before=at(1000)),
        "created_before",
        "later",
    ),
    ("chat without room", "Search", search(namespace="chat"), "room_id", "required"),
    ("chat bad room", "Search", search(namespace="chat", room_id="lobby"), "room_id", "UUID"),
    (
        "room outside chat",
        "Search",
        search(room_id="0b0c5d2e-6a57-4bd8-9d5e-3f3e2c1a0b9c"),
        "room_id",
        "only to the chat",
    ),
    (
        "bad user filter",
        "Search",
        search(namespace="knowledge", user_id="a b"),
        "user_id",
        "not a valid user id",
    ),
    ("no texts", "Embed", memory_pb2.EmbedRequest(), "texts", "at least one"),
    ("too many texts", "Embed", memory_pb2.EmbedRequest(texts=["t"] * 257), "texts", "at most 256"),
    (
        "oversize embed text",
        "Embed",
        memory_pb2.EmbedRequest(texts=["ok", "z" * 8001]),
        "texts[1]",
        "at most 8000",
    ),
]


async def test_bad_input_is_invalid_argument(memory: Any, kit: Any) -> None:
    # One service for every case: starting one per case would cost a second each.
    caller = memory.user()
    for case, rpc, request, field, words in CASES:
        error = await kit.failure(getattr(memory.stub, rpc)(request, metadata=memory.auth(caller)))
        assert isinstance(error, ValidationFailed), (case, error)
        assert words in error.detail, (case, error.detail)
        assert field in error.field_errors, (case, error.field_errors)


async def test_limits_at_their_edges_are_accepted(memory: Any) -> None:
    caller = memory.user()
    response = await memory.stub.Upsert(
        upsert(rec("x" * 8000, "edge-1"), *[rec(f"text {n}") for n in range(255)]),
        metadata=memory.auth(caller),
    )
    assert len(response.ids) == 256
    hits = await memory.stub.Search(
        search(query="q" * 2000, limit=50, min_score=-1.0), metadata=memory.auth(caller)
    )
    assert len(hits.hits) == 50
