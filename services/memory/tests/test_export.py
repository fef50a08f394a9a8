"""ExportMyData (the GDPR export) against real PostgreSQL and Qdrant: the caller's memories, the
knowledge they wrote and the indexed copies of their chat messages (no vectors), and nobody
else's; the worker acting for the user gets the same document; other callers naming a user are
refused; a delegate never writes knowledge; past its limit the export is refused, not cut."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import orjson
from google.protobuf import struct_pb2

from aether.memory.v1 import memory_pb2
from aether_common.identity import ON_BEHALF_OF_KEY
from aether_devstack import testkit
from aether_memory import repository

Metadata = tuple[tuple[str, str], ...]
WRITER = {"perms": ["memory:read", "memory:write", "memory:admin"]}
RECORD_FIELDS = {"id", "room_id", "text", "metadata", "created_at", "updated_at"}


def record(record_id: str, text: str, **metadata: Any) -> memory_pb2.Record:
    meta = struct_pb2.Struct()
    meta.update(metadata)
    return memory_pb2.Record(id=record_id, text=text, metadata=meta)


def service(memory: Any, name: str) -> Metadata:
    """A service token's metadata, as auth issues it (subject `service:<name>`)."""
    return testkit.bearer_metadata(memory.token(f"service:{name}", roles=["service"], perms=[]))


def acting_for(metadata: Metadata, user_id: str) -> Metadata:
    return (*metadata, (ON_BEHALF_OF_KEY, user_id))


async def export(memory: Any, metadata: Metadata) -> dict[str, Any]:
    answer = await memory.stub.ExportMyData(memory_pb2.ExportMyDataRequest(), metadata=metadata)
    document: dict[str, Any] = orjson.loads(answer.json)
    return document


async def chat_copy(memory: Any, sender: str, room_id: str, text: str) -> str:
    """A chat message as memory's consumer stores it (from chat's events)."""
    message_id = str(uuid.uuid4())
    row = repository.Row(
        id=message_id,
        point_id=repository.point_id("chat", "", message_id),
        user_id=sender,
        room_id=room_id,
        text=text,
        text_sha256=repository.text_digest(text),
        metadata={"seq": 1},
        created_at=datetime.now(UTC),
    )
    await memory.app.database.transaction(lambda uow: repository.write(uow.conn, "chat", "", [row]))
    return message_id


async def two_users_data(memory: Any) -> dict[str, Any]:
    alice, bob = memory.user("alice"), memory.user("bob")
    await memory.upsert(alice, "memories", record("m-cat", "My cat is called Tom.", mood="happy"))
    await memory.upsert(alice, "memories", record("m-risk", "I prefer low-risk index funds."))
    await memory.upsert(alice, "knowledge", record("k-bonds", "Bonds pay coupons."), **WRITER)
    await memory.upsert(bob, "memories", record("m-cat", "Bob's dog is called Rex."))
    await memory.upsert(bob, "knowledge", record("k-etf", "An ETF trades like a stock."), **WRITER)
    room = str(uuid.uuid4())
    said = await chat_copy(memory, alice, room, "Anyone buying gold?")
    await chat_copy(memory, bob, room, "Not me.")
    return {"alice": alice, "bob": bob, "room": room, "said": said}


async def test_the_export_holds_exactly_the_caller_s_data(memory: Any) -> None:
    d = await two_users_data(memory)

    document = await export(memory, memory.auth(d["alice"]))

    assert document["service"] == "memory"
    assert document["version"] == 1
    assert document["user_id"] == d["alice"]
    assert document["exported_at"]
    assert document["vectors_included"] is False
    memories = {r["id"]: r for r in document["memories"]}
    assert set(memories) == {"m-cat", "m-risk"}
    assert memories["m-cat"]["text"] == "My cat is called Tom."
    assert memories["m-cat"]["metadata"] == {"mood": "happy"}
    for section in ("memories", "knowledge", "chat"):
        for exported in document[section]:
            assert set(exported) == RECORD_FIELDS, section
    assert [(r["id"], r["text"]) for r in document["knowledge"]] == [
        ("k-bonds", "Bonds pay coupons.")
    ]
    [said] = document["chat"]
    assert (said["id"], said["room_id"], said["text"]) == (
        d["said"],
        d["room"],
        "Anyone buying gold?",
    )
    assert "vector" not in answer_keys(document)

    theirs = await export(memory, memory.auth(d["bob"]))
    assert [r["text"] for r in theirs["memories"]] == ["Bob's dog is called Rex."]
    assert [r["id"] for r in theirs["knowledge"]] == ["k-etf"]
    assert [r["text"] for r in theirs["chat"]] == ["Not me."]


def answer_keys(document: dict[str, Any]) -> set[str]:
    keys = set(document)
    for section in ("memories", "knowledge", "chat"):
        for exported in document[section]:
            keys |= set(exported)
    return keys


async def test_the_worker_acting_for_the_user_gets_the_same_document(memory: Any) -> None:
    d = await two_users_data(memory)

    own = await export(memory, memory.auth(d["alice"]))
    delegated = await export(memory, acting_for(service(memory, "worker"), d["alice"]))

    own.pop("exported_at")
    delegated.pop("exported_at")
    assert delegated == own


async def test_other_callers_naming_a_user_are_refused(memory: Any, kit: Any) -> None:
    d = await two_users_data(memory)
    callers = {
        "another service": service(memory, "ai"),
        "a user's token": memory.auth(d["bob"]),
        "an admin's token": memory.auth(d["bob"], roles=["admin"]),
    }
    for who, metadata in callers.items():
        refused = await kit.failure(
            memory.stub.ExportMyData(
                memory_pb2.ExportMyDataRequest(), metadata=acting_for(metadata, d["alice"])
            )
        )
        assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED, who
        assert refused.error_code == "delegation_refused", who
    anonymous = await kit.failure(memory.stub.ExportMyData(memory_pb2.ExportMyDataRequest()))
    assert anonymous.grpc_code is grpc.StatusCode.UNAUTHENTICATED


async def test_a_delegate_never_writes_knowledge(memory: Any, kit: Any) -> None:
    worker = acting_for(service(memory, "worker"), memory.user("admin"))
    refused = await kit.failure(
        memory.stub.Upsert(
            memory_pb2.UpsertRequest(namespace="knowledge", records=[record("k", "A fact.")]),
            metadata=worker,
        )
    )
    assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED
    # Its own memories it may write, as the user.
    await memory.stub.Upsert(
        memory_pb2.UpsertRequest(namespace="memories", records=[record("m", "Likes tea.")]),
        metadata=worker,
    )


async def test_only_the_services_listed_may_delegate(start_memory: Any, kit: Any) -> None:
    memory = await start_memory(delegating_services=[])
    refused = await kit.failure(
        memory.stub.ExportMyData(
            memory_pb2.ExportMyDataRequest(),
            metadata=acting_for(service(memory, "worker"), memory.user("alice")),
        )
    )
    assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED


async def test_an_export_past_its_limit_is_refused_not_cut(start_memory: Any, kit: Any) -> None:
    memory = await start_memory(export_max_records=1)
    alice = memory.user("alice")
    await memory.upsert(alice, "memories", "One.", "Two.")

    refused = await kit.failure(
        memory.stub.ExportMyData(memory_pb2.ExportMyDataRequest(), metadata=memory.auth(alice))
    )

    assert refused.grpc_code is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.error_code == "export_too_large"
    assert "records" in refused.detail
