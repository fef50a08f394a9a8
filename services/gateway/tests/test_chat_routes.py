"""/api/chat/* REST: each route calls its ChatService RPC with the caller's token, shapes the
answer, and maps chat's errors; bad input is a 4xx in the one error shape. chat is a scripted
gRPC peer here (test_chat_integration.py runs the same routes against the real service)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from aether.chat.v1 import chat_pb2
from aether_common import errors


def ts(year: int = 2025) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(datetime(year, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    return value


ROOM = chat_pb2.Room(
    room_id="r-1",
    name="Traders",
    description="d",
    visibility=chat_pb2.ROOM_VISIBILITY_PUBLIC,
    owner_id="u-ada",
    created_at=ts(),
    last_seq=3,
    member_count=2,
)
ROOM_OUT = {
    "room_id": "r-1",
    "name": "Traders",
    "description": "d",
    "visibility": "public",
    "owner_id": "u-ada",
    "created_at": "2025-01-02T03:04:05.678Z",
    "last_seq": 3,
    "member_count": 2,
}
MESSAGE = chat_pb2.Message(
    message_id="m-3",
    room_id="r-1",
    seq=3,
    sender_id="u-ada",
    client_msg_id="c-3",
    content="hi",
    mentions=["u-bob"],
    created_at=ts(),
)
MESSAGE_OUT = {
    "message_id": "m-3",
    "room_id": "r-1",
    "seq": 3,
    "sender_id": "u-ada",
    "client_msg_id": "c-3",
    "content": "hi",
    "mentions": ["u-bob"],
    "reply_to_seq": 0,
    "created_at": "2025-01-02T03:04:05.678Z",
    "edited_at": None,
    "deleted": False,
}


@pytest.fixture
async def api(start_gateway: Any, fake_chat: Any) -> Any:
    return await start_gateway(chat_grpc_target=fake_chat.address)


@pytest.fixture
def caller(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-ada')}"}


async def test_create_room_forwards_the_token_and_answers_201(
    api: Any, fake_chat: Any, caller: dict[str, str]
) -> None:
    fake_chat.answers["CreateRoom"] = chat_pb2.CreateRoomResponse(room=ROOM)
    response = await api.post(
        "/api/chat/room",
        json={"name": " Traders ", "visibility": "public", "member_ids": ["u-bob"]},
        headers=caller,
    )
    assert response.status_code == 201, response.text
    assert response.json() == ROOM_OUT
    (call,) = fake_chat.calls_to("CreateRoom")
    assert call.request.name == "Traders"
    assert call.request.visibility == chat_pb2.ROOM_VISIBILITY_PUBLIC
    assert list(call.request.member_ids) == ["u-bob"]
    assert call.metadata["authorization"] == caller["Authorization"]


async def test_send_is_201_when_stored_and_200_for_a_retry(
    api: Any, fake_chat: Any, caller: dict[str, str]
) -> None:
    fake_chat.answers["SendMessage"] = chat_pb2.SendMessageResponse(message=MESSAGE, created=True)
    body = {"room_id": "r-1", "client_msg_id": "c-3", "content": "hi", "mentions": ["u-bob"]}
    first = await api.post("/api/chat/message", json=body, headers=caller)
    assert first.status_code == 201, first.text
    assert first.json() == {"message": MESSAGE_OUT, "created": True}
    fake_chat.answers["SendMessage"] = chat_pb2.SendMessageResponse(message=MESSAGE, created=False)
    again = await api.post("/api/chat/message", json=body, headers=caller)
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert [c.request.client_msg_id for c in fake_chat.calls_to("SendMessage")] == ["c-3", "c-3"]


async def test_send_without_client_msg_id_gets_one(
    api: Any, fake_chat: Any, caller: dict[str, str]
) -> None:
    fake_chat.answers["SendMessage"] = chat_pb2.SendMessageResponse(message=MESSAGE, created=True)
    response = await api.post(
        "/api/chat/message", json={"room_id": "r-1", "content": "hi"}, headers=caller
    )
    assert response.status_code == 201
    assert len(fake_chat.calls_to("SendMessage")[0].request.client_msg_id) == 32


async def test_history_passes_the_cursor_and_answers_ascending_messages(
    api: Any, fake_chat: Any, caller: dict[str, str]
) -> None:
    fake_chat.answers["GetHistory"] = chat_pb2.GetHistoryResponse(
        messages=[MESSAGE], has_more=True, last_seq=9
    )
    response = await api.get(
        "/api/chat/history", params={"room_id": "r-1", "after_seq": 2, "limit": 1}, headers=caller
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"messages": [MESSAGE_OUT], "has_more": True, "last_seq": 9}
    (call,) = fake_chat.calls_to("GetHistory")
    assert (call.request.room_id, call.request.after_seq, call.request.limit) == ("r-1", 2, 1)


async def test_the_other_routes_call_their_rpcs(
    api: Any, fake_chat: Any, caller: dict[str, str]
) -> None:
    fake_chat.answers.update(
        {
            "GetRoom": chat_pb2.GetRoomResponse(room=ROOM),
            "JoinRoom": chat_pb2.JoinRoomResponse(room=ROOM),
            "ListMyRooms": chat_pb2.ListMyRoomsResponse(
                rooms=[
                    chat_pb2.RoomSummary(
                        room=ROOM,
                        unread_count=2,
                        last_message=MESSAGE,
                        role=chat_pb2.MEMBER_ROLE_OWNER,
                    )
                ],
                next_page_token="next",
            ),
            "ListMembers": chat_pb2.ListMembersResponse(
                members=[
                    chat_pb2.Member(
                        user_id="u-bob",
                        role=chat_pb2.MEMBER_ROLE_MEMBER,
                        joined_at=ts(),
                        last_read_seq=1,
                    )
                ]
            ),
            "MarkRead": chat_pb2.MarkReadResponse(last_read_seq=3, unread_count=0),
            "EditMessage": chat_pb2.EditMessageResponse(message=MESSAGE),
            "GetPresence": chat_pb2.GetPresenceResponse(
                members=[chat_pb2.Presence(user_id="u-bob", online=True)]
            ),
        }
    )
    rooms = await api.get("/api/chat/rooms", params={"limit": 10}, headers=caller)
    assert rooms.json() == {
        "rooms": [
            {"room": ROOM_OUT, "unread_count": 2, "last_message": MESSAGE_OUT, "role": "owner"}
        ],
        "next_page_token": "next",
    }
    assert (await api.get("/api/chat/rooms/r-1", headers=caller)).json() == ROOM_OUT
    assert (await api.post("/api/chat/rooms/r-1/join", headers=caller)).json() == ROOM_OUT
    assert (await api.post("/api/chat/rooms/r-1/leave", headers=caller)).status_code == 204
    invite = await api.post(
        "/api/chat/rooms/r-1/members", json={"user_id": "u-bob"}, headers=caller
    )
    assert invite.status_code == 204
    assert (
        await api.delete("/api/chat/rooms/r-1/members/u-bob", headers=caller)
    ).status_code == 204
    members = await api.get("/api/chat/rooms/r-1/members", headers=caller)
    assert members.json()["members"] == [
        {
            "user_id": "u-bob",
            "role": "member",
            "joined_at": "2025-01-02T03:04:05.678Z",
            "last_read_seq": 1,
        }
    ]
    read = await api.post("/api/chat/rooms/r-1/read", json={"seq": 3}, headers=caller)
    assert read.json() == {"last_read_seq": 3, "unread_count": 0}
    edit = await api.patch("/api/chat/rooms/r-1/messages/3", json={"content": "hi"}, headers=caller)
    assert edit.json() == MESSAGE_OUT
    assert (await api.delete("/api/chat/rooms/r-1/messages/3", headers=caller)).status_code == 204
    presence = await api.get("/api/chat/rooms/r-1/presence", headers=caller)
    assert presence.json() == {"members": [{"user_id": "u-bob", "online": True, "last_seen": None}]}
    called = {c.method for c in fake_chat.calls}
    assert called >= {
        "ListMyRooms",
        "GetRoom",
        "JoinRoom",
        "LeaveRoom",
        "InviteMember",
        "RemoveMember",
        "ListMembers",
        "MarkRead",
        "EditMessage",
        "DeleteMessage",
        "GetPresence",
    }
    assert all(c.metadata["authorization"] == caller["Authorization"] for c in fake_chat.calls)


@pytest.mark.parametrize(
    ("method", "path", "body", "params"),
    [
        ("post", "/api/chat/room", {"name": ""}, None),
        ("post", "/api/chat/room", {"name": "x", "visibility": "secret"}, None),
        ("post", "/api/chat/room", {"name": "x", "owner": "me"}, None),
        ("post", "/api/chat/message", {"room_id": "r-1"}, None),
        ("post", "/api/chat/message", {"room_id": "r-1", "content": "x" * 20_000}, None),
        ("post", "/api/chat/message", {"room_id": "r 1", "content": "x"}, None),
        ("post", "/api/chat/message", {"room_id": "r-1", "content": "x", "reply_to_seq": -1}, None),
        ("get", "/api/chat/history", None, {}),
        ("get", "/api/chat/history", None, {"room_id": "r-1", "limit": 0}),
        ("get", "/api/chat/history", None, {"room_id": "r-1", "after_seq": "x"}),
        ("get", "/api/chat/history", None, {"room_id": "r-1", "after_seq": 1, "before_seq": 5}),
        ("post", "/api/chat/rooms/r-1/read", {"seq": "3"}, None),
        ("patch", "/api/chat/rooms/r-1/messages/0", {"content": "x"}, None),
    ],
)
async def test_bad_input_is_a_400_in_the_error_shape(
    api: Any,
    fake_chat: Any,
    caller: dict[str, str],
    error_shape: Any,
    method: str,
    path: str,
    body: Any,
    params: Any,
) -> None:
    response = await api.request(method.upper(), path, json=body, params=params, headers=caller)
    error_shape(response, 400, "validation")
    assert not fake_chat.calls


async def test_chat_errors_keep_their_meaning(
    api: Any, fake_chat: Any, caller: dict[str, str], error_shape: Any
) -> None:
    fake_chat.answers["GetRoom"] = errors.NotFound("room not found")
    error_shape(await api.get("/api/chat/rooms/r-x", headers=caller), 404, "not_found")
    fake_chat.answers["GetHistory"] = errors.Forbidden("you are not a member of this room")
    detail = error_shape(
        await api.get("/api/chat/history", params={"room_id": "r-1"}, headers=caller), 403
    )
    assert "not a member" in detail


async def test_chat_routes_need_a_caller(api: Any, error_shape: Any) -> None:
    error_shape(await api.post("/api/chat/room", json={"name": "x"}), 401)
    error_shape(await api.get("/api/chat/history", params={"room_id": "r"}), 401)


async def test_chat_down_is_a_503_and_status_says_so(
    start_gateway: Any, caller: dict[str, str], error_shape: Any
) -> None:
    api = await start_gateway(chat_grpc_target="127.0.0.1:1")
    error_shape(await api.get("/api/chat/rooms/r-1", headers=caller), 503, "unavailable")
    status = await api.get("/api/status")
    assert status.status_code == 503
    assert status.json()["dependencies"]["chat"]["ok"] is False


async def test_without_chat_configured_routes_answer_503(
    start_gateway: Any, caller: dict[str, str], error_shape: Any
) -> None:
    api = await start_gateway()
    error_shape(await api.get("/api/chat/rooms", headers=caller), 503, "chat_not_configured")
    status = await api.get("/api/status")
    assert "chat" not in status.json()["dependencies"]
