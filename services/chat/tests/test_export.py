"""ExportMyData (the GDPR export) against real MongoDB and Redis: the caller's rooms with their
membership, invitations, every message they sent (tombstones marked) and their presence, and
nobody else's; the worker acting for the user gets the same document; other callers naming a
user are refused; a delegate is never a moderator or an operator; past a limit it is refused."""

from __future__ import annotations

from typing import Any

import grpc
import orjson

from aether.chat.v1 import chat_pb2
from aether_common.identity import ON_BEHALF_OF_KEY
from aether_devstack import testkit

PRIVATE = chat_pb2.ROOM_VISIBILITY_PRIVATE

MESSAGE_FIELDS = {
    "id",
    "room_id",
    "seq",
    "client_msg_id",
    "content",
    "mentions",
    "reply_to_seq",
    "created_at",
    "edited_at",
    "deleted",
    "deleted_by",
    "deleted_at",
}


def service(chat: Any, name: str) -> tuple[tuple[str, str], ...]:
    """A service token's metadata, as auth issues it (subject `service:<name>`)."""
    return testkit.bearer_metadata(chat.token(f"service:{name}", roles=["service"], perms=[]))


def acting_for(metadata: tuple[tuple[str, str], ...], user_id: str) -> tuple[tuple[str, str], ...]:
    return (*metadata, (ON_BEHALF_OF_KEY, user_id))


async def export(chat: Any, metadata: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    answer = await chat.stub.ExportMyData(chat_pb2.ExportMyDataRequest(), metadata=metadata)
    document: dict[str, Any] = orjson.loads(answer.json)
    return document


async def two_users_data(chat: Any) -> dict[str, Any]:
    """Alice owns a room, is a member of Bob's, is invited to his private one, sent messages
    (one edited, one deleted) and is online; Bob has his own messages and room."""
    alice, bob = chat.user("alice"), chat.user("bob")
    mine = (await chat.create_room(alice, name="Alice's desk")).room_id
    theirs = (await chat.create_room(bob, name="Bob's floor")).room_id
    private = (await chat.create_room(bob, name="Bob's den", visibility=PRIVATE)).room_id
    hidden = (await chat.create_room(bob, name="Bob alone")).room_id
    await chat.stub.JoinRoom(chat_pb2.JoinRoomRequest(room_id=theirs), metadata=chat.auth(alice))
    await chat.stub.InviteMember(
        chat_pb2.InviteMemberRequest(room_id=private, user_id=alice), metadata=chat.auth(bob)
    )
    first = (await chat.send(alice, mine, "first", mentions=[bob])).message
    await chat.send(bob, theirs, "bob speaks")
    reply = (await chat.send(alice, theirs, "a reply", reply_to_seq=1)).message
    gone = (await chat.send(alice, theirs, "regret")).message
    await chat.send(bob, hidden, "bob alone")
    await chat.stub.EditMessage(
        chat_pb2.EditMessageRequest(room_id=theirs, seq=reply.seq, content="an edited reply"),
        metadata=chat.auth(alice),
    )
    await chat.stub.DeleteMessage(
        chat_pb2.DeleteMessageRequest(room_id=theirs, seq=gone.seq), metadata=chat.auth(alice)
    )
    await chat.stub.UpdatePresence(
        chat_pb2.UpdatePresenceRequest(online=True), metadata=chat.auth(alice)
    )
    return {
        "alice": alice,
        "bob": bob,
        "mine": mine,
        "theirs": theirs,
        "private": private,
        "hidden": hidden,
        "first": first,
        "reply": reply,
        "gone": gone,
    }


async def test_the_export_holds_exactly_the_caller_s_data(chat: Any) -> None:
    d = await two_users_data(chat)
    alice, bob = d["alice"], d["bob"]

    document = await export(chat, chat.auth(alice))

    assert document["service"] == "chat"
    assert document["version"] == 1
    assert document["user_id"] == alice
    assert document["exported_at"]
    rooms = {room["id"]: room for room in document["rooms"]}
    assert set(rooms) == {d["mine"], d["theirs"]}
    assert rooms[d["mine"]]["name"] == "Alice's desk"
    assert rooms[d["mine"]]["owner_id"] == alice
    assert rooms[d["mine"]]["membership"]["role"] == "owner"
    assert rooms[d["theirs"]]["owner_id"] == bob
    assert rooms[d["theirs"]]["membership"]["role"] == "member"
    # Sending marks read up to the sender's own message: the read position is kept.
    assert rooms[d["theirs"]]["membership"]["last_read_seq"] == d["gone"].seq
    assert set(rooms[d["mine"]]) == {
        "id",
        "name",
        "description",
        "visibility",
        "owner_id",
        "created_at",
        "member_count",
        "last_seq",
        "last_activity_at",
        "membership",
    }
    assert set(rooms[d["mine"]]["membership"]) == {"role", "joined_at", "last_read_seq"}
    assert [(i["room_id"], i["invited_by"]) for i in document["invitations"]] == [
        (d["private"], bob)
    ]

    messages = {m["id"]: m for m in document["messages"]}
    assert set(messages) == {d["first"].message_id, d["reply"].message_id, d["gone"].message_id}
    for message in messages.values():
        assert set(message) == MESSAGE_FIELDS
    first = messages[d["first"].message_id]
    assert (first["room_id"], first["seq"], first["content"]) == (d["mine"], 1, "first")
    assert first["mentions"] == [bob]
    assert first["client_msg_id"] == d["first"].client_msg_id
    assert first["deleted"] is False
    assert first["edited_at"] is None
    reply = messages[d["reply"].message_id]
    assert reply["content"] == "an edited reply"
    assert reply["reply_to_seq"] == 1
    assert reply["edited_at"] is not None
    tombstone = messages[d["gone"].message_id]
    assert tombstone["deleted"] is True
    assert tombstone["content"] == ""
    assert tombstone["deleted_by"] == alice
    assert tombstone["deleted_at"] is not None
    assert document["presence"]["online"] is True
    assert document["presence"]["last_seen_at"] is not None

    # Bob's export has his own and none of Alice's.
    theirs = await export(chat, chat.auth(bob))
    assert theirs["user_id"] == bob
    assert {room["id"] for room in theirs["rooms"]} == {d["theirs"], d["private"], d["hidden"]}
    assert [m["content"] for m in theirs["messages"]] == ["bob speaks", "bob alone"]
    assert theirs["invitations"] == []
    assert theirs["presence"] == {"online": False, "last_seen_at": None}


async def test_a_user_with_nothing_gets_an_empty_export(chat: Any) -> None:
    nobody = chat.user("nobody")
    document = await export(chat, chat.auth(nobody))
    assert document["user_id"] == nobody
    assert (document["rooms"], document["invitations"], document["messages"]) == ([], [], [])


async def test_the_worker_acting_for_the_user_gets_the_same_document(chat: Any) -> None:
    d = await two_users_data(chat)

    own = await export(chat, chat.auth(d["alice"]))
    delegated = await export(chat, acting_for(service(chat, "worker"), d["alice"]))

    own.pop("exported_at")
    delegated.pop("exported_at")
    assert delegated == own


async def test_other_callers_naming_a_user_are_refused(chat: Any, kit: Any) -> None:
    d = await two_users_data(chat)
    callers = {
        "another service": service(chat, "alerts"),
        "a user's token": chat.auth(d["bob"]),
        "an admin's token": chat.admin(d["bob"]),
    }
    for who, metadata in callers.items():
        refused = await kit.failure(
            chat.stub.ExportMyData(
                chat_pb2.ExportMyDataRequest(), metadata=acting_for(metadata, d["alice"])
            )
        )
        assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED, who
        assert refused.error_code == "delegation_refused", who
    # The worker as itself is a service, and chat serves users.
    itself = await kit.failure(
        chat.stub.ExportMyData(chat_pb2.ExportMyDataRequest(), metadata=service(chat, "worker"))
    )
    assert itself.grpc_code is grpc.StatusCode.PERMISSION_DENIED
    anonymous = await kit.failure(chat.stub.ExportMyData(chat_pb2.ExportMyDataRequest()))
    assert anonymous.grpc_code is grpc.StatusCode.UNAUTHENTICATED


async def test_a_delegate_is_neither_a_moderator_nor_an_operator(chat: Any, kit: Any) -> None:
    d = await two_users_data(chat)
    worker = service(chat, "worker")
    # Acting for a moderator grants none of the moderator's permission.
    moderator = chat.user("moderator")
    await chat.stub.JoinRoom(
        chat_pb2.JoinRoomRequest(room_id=d["theirs"]), metadata=chat.auth(moderator)
    )
    moderate = await kit.failure(
        chat.stub.DeleteMessage(
            chat_pb2.DeleteMessageRequest(room_id=d["theirs"], seq=1),
            metadata=acting_for(worker, moderator),
        )
    )
    assert moderate.grpc_code is grpc.StatusCode.PERMISSION_DENIED
    operate = await kit.failure(
        chat.stub.ArchiveExpiredMessages(
            chat_pb2.ArchiveExpiredMessagesRequest(), metadata=acting_for(worker, d["alice"])
        )
    )
    assert operate.grpc_code is grpc.StatusCode.PERMISSION_DENIED
    # Bob's message is still there.
    history = await chat.history(d["bob"], d["theirs"])
    assert history.messages[0].content == "bob speaks"


async def test_only_the_services_listed_may_delegate(start_chat: Any, kit: Any) -> None:
    chat = await start_chat(delegating_services=[])
    refused = await kit.failure(
        chat.stub.ExportMyData(
            chat_pb2.ExportMyDataRequest(),
            metadata=acting_for(service(chat, "worker"), chat.user("alice")),
        )
    )
    assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED


async def test_an_export_past_its_limits_is_refused_not_cut(start_chat: Any, kit: Any) -> None:
    chat = await start_chat(export_max_records=2)
    alice = chat.user("alice")
    room = (await chat.create_room(alice)).room_id
    for n in range(3):
        await chat.send(alice, room, f"message {n}")

    refused = await kit.failure(
        chat.stub.ExportMyData(chat_pb2.ExportMyDataRequest(), metadata=chat.auth(alice))
    )

    assert refused.grpc_code is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.error_code == "export_too_large"
    assert "messages" in refused.detail
    small = await start_chat(export_max_bytes=1024)
    for n in range(3):
        await small.send(alice, room, "x" * 400 + str(n))
    too_big = await kit.failure(
        small.stub.ExportMyData(chat_pb2.ExportMyDataRequest(), metadata=small.auth(alice))
    )
    assert too_big.error_code == "export_too_large"
    assert "bytes" in too_big.detail
