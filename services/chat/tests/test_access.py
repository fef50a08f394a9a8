"""Who may call (verified tokens only) and what bad input answers (a clear 4xx, never INTERNAL)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
import jwt
import pytest

from aether.chat.v1 import chat_pb2
from aether_common.errors import Unauthenticated, ValidationFailed

PUB = chat_pb2.ROOM_VISIBILITY_PUBLIC
METHODS = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].methods


def _empty(method: Any) -> Any:
    return getattr(chat_pb2, method.input_type.name)()


async def test_every_rpc_needs_a_token(chat: Any, kit: Any) -> None:
    for method in METHODS:
        error = await kit.failure(getattr(chat.stub, method.name)(_empty(method)))
        assert isinstance(error, Unauthenticated), (method.name, error)
        assert "access token" in error.detail


@pytest.mark.parametrize(
    ("claims", "headers", "why"),
    [
        ({"aud": "another-api"}, {}, "not meant for this API"),
        ({"iss": "https://evil.example"}, {}, "unexpected issuer"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, {}, "expired"),
        ({"sid": None}, {}, "sid"),
        ({}, {"typ": "JWT"}, "at+jwt"),
    ],
)
async def test_tokens_that_do_not_verify_are_refused(
    chat: Any, kit: Any, claims: dict[str, Any], headers: dict[str, Any], why: str
) -> None:
    token = kit.mint(chat.key, chat.user(), headers=headers, **claims)

    error = await kit.failure(
        chat.stub.ListMyRooms(
            chat_pb2.ListMyRoomsRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
    )

    assert isinstance(error, Unauthenticated), error
    assert why in error.detail


async def test_unsigned_and_foreign_tokens_are_refused(chat: Any, kit: Any) -> None:
    user = chat.user()
    now = int(time.time())
    claims = {
        "sub": user,
        "jti": uuid.uuid4().hex,
        "sid": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 600,
        "iss": "aether-auth",
        "aud": "aether",
    }
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"typ": "at+jwt"})
    hs256 = jwt.encode(
        claims, "a-shared-secret-at-least-32-bytes!!", algorithm="HS256", headers={"typ": "at+jwt"}
    )
    foreign = kit.mint(kit.new_key(), user)  # a key auth never published
    tampered = kit.mint(chat.key, user)[:-4] + "AAAA"

    for token in (unsigned, hs256, foreign, tampered, "not-a-jwt"):
        error = await kit.failure(
            chat.stub.ListMyRooms(
                chat_pb2.ListMyRoomsRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
        )
        assert isinstance(error, Unauthenticated), (token, error)
    error = await kit.failure(
        chat.stub.ListMyRooms(chat_pb2.ListMyRoomsRequest(), metadata=(("authorization", "x"),))
    )
    assert isinstance(error, Unauthenticated)
    assert "Bearer" in error.detail


async def test_a_valid_token_from_auth_s_jwks_passes(chat: Any) -> None:
    user = chat.user()

    response = await chat.stub.ListMyRooms(chat_pb2.ListMyRoomsRequest(), metadata=chat.auth(user))

    assert list(response.rooms) == []
    assert response.next_page_token == ""


async def test_bad_input_is_invalid_argument_with_the_field(chat: Any, kit: Any) -> None:
    owner = chat.user()
    room = (await chat.create_room(owner)).room_id
    me = chat.auth(owner)
    s = chat.stub
    cases: list[tuple[str, Any]] = [
        ("name", s.CreateRoom(chat_pb2.CreateRoomRequest(name="  ", visibility=PUB), metadata=me)),
        (
            "name",
            s.CreateRoom(chat_pb2.CreateRoomRequest(name="x" * 101, visibility=PUB), metadata=me),
        ),
        ("visibility", s.CreateRoom(chat_pb2.CreateRoomRequest(name="ok"), metadata=me)),
        (
            "member_ids",
            s.CreateRoom(
                chat_pb2.CreateRoomRequest(name="ok", visibility=PUB, member_ids=["bad id"]),
                metadata=me,
            ),
        ),
        ("room_id", s.GetRoom(chat_pb2.GetRoomRequest(room_id="nope"), metadata=me)),
        ("room_id", s.JoinRoom(chat_pb2.JoinRoomRequest(), metadata=me)),
        ("content", chat.send(owner, room, "")),
        ("content", chat.send(owner, room, " \n\t ")),
        ("content", chat.send(owner, room, "x" * 4001)),
        ("content", chat.send(owner, room, "nul\x00")),
        ("client_msg_id", chat.send(owner, room, "hi", client_msg_id="has spaces")),
        ("mentions", chat.send(owner, room, "hi", mentions=["ok", "not ok"])),
        ("mentions", chat.send(owner, room, "hi", mentions=[f"u{i}" for i in range(51)])),
        ("reply_to_seq", chat.send(owner, room, "hi", reply_to_seq=-1)),
        ("before_seq", chat.history(owner, room, after_seq=1, before_seq=5)),
        ("limit", chat.history(owner, room, limit=-1)),
        ("limit", chat.history(owner, room, limit=101)),
        ("after_seq", chat.history(owner, room, after_seq=-3)),
        (
            "seq",
            s.EditMessage(chat_pb2.EditMessageRequest(room_id=room, content="x"), metadata=me),
        ),
        (
            "content",
            s.EditMessage(chat_pb2.EditMessageRequest(room_id=room, seq=1), metadata=me),
        ),
        ("seq", s.DeleteMessage(chat_pb2.DeleteMessageRequest(room_id=room, seq=-1), metadata=me)),
        ("seq", s.MarkRead(chat_pb2.MarkReadRequest(room_id=room, seq=-1), metadata=me)),
        (
            "page_token",
            s.ListMyRooms(chat_pb2.ListMyRoomsRequest(page_token="!!garbage!!"), metadata=me),
        ),
        (
            "page_token",
            s.ListMyRooms(chat_pb2.ListMyRoomsRequest(page_token="e30"), metadata=me),  # {}
        ),
        ("limit", s.ListMyRooms(chat_pb2.ListMyRoomsRequest(limit=1001), metadata=me)),
        (
            "page_token",
            s.ListMembers(
                chat_pb2.ListMembersRequest(room_id=room, page_token="WzFd"), metadata=me
            ),
        ),
        (
            "room_ids",
            s.CheckMembership(chat_pb2.CheckMembershipRequest(room_ids=["x"]), metadata=me),
        ),
        (
            "room_ids",
            s.CheckMembership(
                chat_pb2.CheckMembershipRequest(room_ids=[str(uuid.uuid4()) for _ in range(501)]),
                metadata=me,
            ),
        ),
        (
            "user_id",
            s.InviteMember(chat_pb2.InviteMemberRequest(room_id=room, user_id=owner), metadata=me),
        ),
        (
            "user_id",
            s.InviteMember(chat_pb2.InviteMemberRequest(room_id=room, user_id="a b"), metadata=me),
        ),
        (
            "user_id",
            s.RemoveMember(chat_pb2.RemoveMemberRequest(room_id=room, user_id=owner), metadata=me),
        ),
        ("room_id", s.SetTyping(chat_pb2.SetTypingRequest(room_id="../x"), metadata=me)),
    ]
    for field, call in cases:
        error = await kit.failure(call)
        assert isinstance(error, ValidationFailed), (field, error)
        assert error.grpc_code is grpc.StatusCode.INVALID_ARGUMENT
        assert field in error.field_errors, (field, error.field_errors)
        assert error.detail
        assert error.detail == error.field_errors[field]
    # Nothing of that was stored.
    assert await chat.db.messages.count_documents({}) == 0


async def test_the_message_size_limit_is_configurable(start_chat: Any, kit: Any) -> None:
    chat = await start_chat(max_message_chars=10)
    owner = chat.user()
    room = await chat.create_room(owner)

    assert (await chat.send(owner, room.room_id, "x" * 10)).created
    error = await kit.failure(chat.send(owner, room.room_id, "x" * 11))

    assert isinstance(error, ValidationFailed)
    assert "the limit is 10" in error.detail


async def test_no_rpc_answers_internal_to_empty_input(chat: Any) -> None:
    """Every method with an empty request and a valid caller: a 4xx-class code or OK."""
    user = chat.user()
    answers: dict[str, tuple[grpc.StatusCode, str]] = {}
    for method in METHODS:
        try:
            await getattr(chat.stub, method.name)(_empty(method), metadata=chat.auth(user))
        except grpc.aio.AioRpcError as exc:
            answers[method.name] = (exc.code(), exc.details() or "")
        else:
            answers[method.name] = (grpc.StatusCode.OK, "")
    # The operators' RPC refuses a user outright (test_archive.py covers who may call it).
    assert answers["ArchiveExpiredMessages"][0] is grpc.StatusCode.PERMISSION_DENIED
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    users = {name: answer for name, answer in answers.items() if name != "ArchiveExpiredMessages"}
    assert {name: code for name, (code, _) in users.items() if code not in allowed} == {}
    assert all(detail for code, detail in answers.values() if code is not grpc.StatusCode.OK)
    assert answers["CreateRoom"][0] is grpc.StatusCode.INVALID_ARGUMENT
    assert answers["ListMyRooms"][0] is grpc.StatusCode.OK
