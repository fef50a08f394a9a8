"""Who may do what in each namespace (memory.proto): tokens, owners, admins, room members."""

from __future__ import annotations

from typing import Any

import pytest

from aether.memory.v1 import memory_pb2
from aether_common.errors import Forbidden, Unauthenticated, Unavailable

WRITER = {"perms": ["memory:read", "memory:write", "memory:admin"]}


def calls(namespace: str = "memories") -> dict[str, tuple[str, Any]]:
    return {
        "Upsert": (
            "Upsert",
            memory_pb2.UpsertRequest(namespace=namespace, records=[memory_pb2.Record(text="x")]),
        ),
        "Delete": ("Delete", memory_pb2.DeleteRequest(namespace=namespace, ids=["x"])),
        "Search": ("Search", memory_pb2.SearchRequest(namespace=namespace, query="x")),
        "Embed": ("Embed", memory_pb2.EmbedRequest(texts=["x"])),
    }


@pytest.mark.parametrize("rpc", ["Upsert", "Delete", "Search", "Embed"])
async def test_every_rpc_needs_a_valid_token(memory: Any, kit: Any, rpc: str) -> None:
    method, request = calls()[rpc]
    call = getattr(memory.stub, method)

    error = await kit.failure(call(request))
    assert isinstance(error, Unauthenticated)
    assert "access token" in error.detail

    forged = kit.mint(kit.new_key(), "intruder")  # signed by a key auth never published
    error = await kit.failure(call(request, metadata=(("authorization", f"Bearer {forged}"),)))
    assert isinstance(error, Unauthenticated)

    error = await kit.failure(call(request, metadata=(("authorization", "Basic abc"),)))
    assert isinstance(error, Unauthenticated)


async def test_memories_belong_to_their_owner(memory: Any) -> None:
    alice, bob = memory.user("alice"), memory.user("bob")
    await memory.upsert(alice, "memories", memory_pb2.Record(id="plan", text="Alice buys gold"))
    await memory.upsert(bob, "memories", memory_pb2.Record(id="plan", text="Bob sells silver"))

    # The same id, two owners: two records, each seen only by its owner.
    alice_hits = await memory.search(alice, "memories", "precious metals")
    bob_hits = await memory.search(bob, "memories", "precious metals")
    assert [(h.record.id, h.record.text) for h in alice_hits] == [("plan", "Alice buys gold")]
    assert [(h.record.id, h.record.text) for h in bob_hits] == [("plan", "Bob sells silver")]
    # A user_id filter cannot reach someone else's memories.
    assert [h.record.text for h in await memory.search(bob, "memories", "gold", user_id=alice)] == [
        "Bob sells silver"
    ]

    # Bob deleting "plan" deletes his own, never Alice's.
    response = await memory.stub.Delete(
        memory_pb2.DeleteRequest(namespace="memories", ids=["plan"]), metadata=memory.auth(bob)
    )
    assert response.deleted == 1
    assert await memory.search(bob, "memories", "precious metals") == []
    assert len(await memory.search(alice, "memories", "precious metals")) == 1


async def test_knowledge_is_read_by_all_and_written_by_admins_or_writers(
    memory: Any, kit: Any
) -> None:
    admin, writer, user = memory.user("admin"), memory.user("writer"), memory.user("user")
    doc = memory_pb2.Record(id="faq-1", text="Margin calls happen when equity falls too low.")

    error = await kit.failure(memory.upsert(user, "knowledge", doc))
    assert isinstance(error, Forbidden)
    assert "memory:admin" in error.detail
    # memory:write is what auth gives every plan: it covers one's own memories, not knowledge.
    every_plan = {"perms": ["memory:read", "memory:write"]}
    error = await kit.failure(memory.upsert(user, "knowledge", doc, **every_plan))
    assert isinstance(error, Forbidden)
    error = await kit.failure(
        memory.stub.Delete(
            memory_pb2.DeleteRequest(namespace="knowledge", ids=["faq-1"]),
            metadata=memory.auth(user),
        )
    )
    assert isinstance(error, Forbidden)

    assert (await memory.upsert(admin, "knowledge", doc, roles=["admin"])).ids == ["faq-1"]
    other = memory_pb2.Record(id="faq-2", text="Stop orders limit losses.")
    assert (await memory.upsert(writer, "knowledge", other, **WRITER)).ids == ["faq-2"]

    hits = await memory.search(user, "knowledge", "what is a margin call?")
    assert hits[0].record.id == "faq-1"
    assert hits[0].record.user_id == admin  # the writer is the record's owner

    deleted = await memory.stub.Delete(
        memory_pb2.DeleteRequest(namespace="knowledge", ids=["faq-1", "faq-2"]),
        metadata=memory.auth(writer, **WRITER),
    )
    assert deleted.deleted == 2


async def test_chat_is_never_written_by_calls(memory: Any, kit: Any) -> None:
    admin = memory.user("admin")
    everything = {"roles": ["admin"], "perms": ["memory:read", "memory:write"]}
    error = await kit.failure(memory.upsert(admin, "chat", "hello", **everything))
    assert isinstance(error, Forbidden)
    assert "events" in error.detail
    error = await kit.failure(
        memory.stub.Delete(
            memory_pb2.DeleteRequest(namespace="chat", ids=["m1"]),
            metadata=memory.auth(admin, **everything),
        )
    )
    assert isinstance(error, Forbidden)


async def test_chat_is_searched_by_room_members_only(memory: Any, kit: Any) -> None:
    member, stranger = memory.user("member"), memory.user("stranger")
    room = memory.chat.room(member)

    assert await memory.search(member, "chat", "hello", room_id=room) == []
    # chat answered for the caller's own token (it verifies it and reads its subject).
    assert memory.chat.asked_by[-1] == member

    error = await kit.failure(memory.search(stranger, "chat", "hello", room_id=room))
    assert isinstance(error, Forbidden)
    assert "members" in error.detail
    assert memory.chat.asked_by[-1] == stranger


async def test_chat_being_away_is_unavailable_not_internal(start_memory: Any, kit: Any) -> None:
    memory = await start_memory(chat_grpc_target="127.0.0.1:1", chat_timeout_s=1.0)
    member = memory.user()
    error = await kit.failure(memory.search(member, "chat", "hello", room_id=memory.chat.room()))
    assert isinstance(error, Unavailable)
