"""WS /api/chat/connect at its edges: authentication, origin, bad frames, formats, limits,
heartbeats. A real uvicorn serves the gateway app; chat is a scripted gRPC peer here (the
end-to-end behaviour against the real chat service is test_chat_integration.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from aether.chat.v1 import chat_pb2
from aether_common import errors

TIMEOUT = 5.0


async def open_ws(
    gateway: Any,
    token: str | None = None,
    *,
    subprotocols: list[str] | None = None,
    origin: str | None = None,
    path_suffix: str = "",
) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await connect(
        gateway.ws_url + path_suffix,
        additional_headers=headers,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        compression=None,
        open_timeout=TIMEOUT,
        max_size=None,
    )


async def recv(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
    if isinstance(raw, bytes):
        frame: dict[str, Any] = msgpack.unpackb(raw)
        return frame
    frame = json.loads(raw)
    return frame


async def until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        frame = await recv(ws)
        if frame["type"] == kind:
            return frame


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed:
        pass
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


@pytest.fixture
async def gw(serve_gateway: Any, fake_chat: Any) -> Any:
    return await serve_gateway(chat_grpc_target=fake_chat.address)


# -- authentication -------------------------------------------------------------------------------
async def test_a_bearer_header_authenticates_and_ping_answers_pong(
    gw: Any, token: Callable[..., str]
) -> None:
    async with await open_ws(gw, token(sub="u-ada")) as ws:
        ready = await recv(ws)
        assert ready["type"] == "ready"
        assert ready["user_id"] == "u-ada"
        assert ready["format"] == "json"
        await ws.send(json.dumps({"type": "ping", "id": "p1"}))
        assert await recv(ws) == {"type": "pong", "id": "p1"}


async def test_a_browser_authenticates_with_a_first_auth_frame(
    gw: Any, token: Callable[..., str]
) -> None:
    async with await open_ws(gw) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token(sub="u-web")}))
        ready = await recv(ws)
        assert (ready["type"], ready["user_id"]) == ("ready", "u-web")


async def test_no_auth_frame_in_time_closes_4001(serve_gateway: Any, fake_chat: Any) -> None:
    gw = await serve_gateway(chat_grpc_target=fake_chat.address, chat_ws_auth_timeout_s=0.3)
    async with await open_ws(gw) as ws:
        error = await recv(ws)
        assert error["code"] == "auth_timeout"
        code, reason = await closed_with(ws)
    assert code == 4001
    assert "auth frame" in reason


@pytest.mark.parametrize(
    "first_frame",
    [
        "not json",
        json.dumps({"type": "subscribe", "rooms": [{"room_id": "r1"}]}),
        json.dumps({"type": "auth"}),
    ],
)
async def test_anything_but_an_auth_frame_first_closes_4001(gw: Any, first_frame: str) -> None:
    async with await open_ws(gw) as ws:
        await ws.send(first_frame)
        error = await recv(ws)
        assert error["type"] == "error"
        code, _ = await closed_with(ws)
    assert code == 4001


async def test_a_bad_token_is_refused_with_the_reason(
    gw: Any, token: Callable[..., str], new_key: Callable[..., Any], mint_token: Any
) -> None:
    forged = mint_token(new_key())  # a key the JWKS does not have
    for attempt, expected in [
        ("Bearer-less", "invalid_token"),
        (forged, "invalid_token"),
        (token(exp=1), "token_expired"),
    ]:
        headers_token = attempt
        async with await open_ws(gw, headers_token) as ws:
            error = await recv(ws)
            assert error["type"] == "error"
            assert error["code"] == expected, error
            code, reason = await closed_with(ws)
        assert code == 4001
        assert reason


async def test_a_token_in_the_url_is_refused(gw: Any, token: Callable[..., str]) -> None:
    async with await open_ws(gw, path_suffix=f"?token={token()}") as ws:
        error = await recv(ws)
        assert error["code"] == "token_in_url"
        code, _ = await closed_with(ws)
    assert code == 4001


async def test_a_revoked_token_is_refused(
    gw: Any, token: Callable[..., str], redis: Any, redis_prefix: str
) -> None:
    raw = token(jti="jti-revoked")
    await redis.set(f"{redis_prefix}auth:revoked:jti:jti-revoked", "1", ex=60)
    async with await open_ws(gw, raw) as ws:
        await recv(ws)
        code, reason = await closed_with(ws)
    assert code == 4001
    assert "revoked" in reason


async def test_origins_outside_the_cors_list_are_refused_4003(
    serve_gateway: Any, fake_chat: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(
        chat_grpc_target=fake_chat.address, cors_origins=["https://app.aether.test"]
    )
    async with await open_ws(gw, token(), origin="https://evil.test") as ws:
        error = await recv(ws)
        assert error["code"] == "forbidden_origin"
        code, _ = await closed_with(ws)
    assert code == 4003
    async with await open_ws(gw, token(), origin="https://app.aether.test") as ws:
        assert (await recv(ws))["type"] == "ready"
    # No Origin header (a mobile app, a server): allowed.
    async with await open_ws(gw, token()) as ws:
        assert (await recv(ws))["type"] == "ready"


async def test_without_chat_configured_the_socket_closes_1013(
    serve_gateway: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway()
    async with await open_ws(gw, token()) as ws:
        error = await recv(ws)
        assert error["code"] == "unavailable"
        code, _ = await closed_with(ws)
    assert code == 1013


# -- bad frames ------------------------------------------------------------------------------------
async def test_bad_frames_get_error_frames_and_the_connection_goes_on(
    serve_gateway: Any, fake_chat: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(chat_grpc_target=fake_chat.address, chat_ws_max_frame_bytes=2048)
    async with await open_ws(gw, token()) as ws, await open_ws(gw, token()) as other:
        await recv(ws)
        await recv(other)
        cases: list[tuple[str | bytes, str]] = [
            ("{not json", "invalid_frame"),
            ("[1, 2]", "invalid_frame"),
            (json.dumps({"no": "type"}), "invalid_frame"),
            (json.dumps({"type": "launch_missiles"}), "unknown_type"),
            (json.dumps({"type": "send", "room_id": "r1"}), "invalid_frame"),
            (
                json.dumps(
                    {
                        "type": "send",
                        "room_id": "r1",
                        "client_msg_id": "c1",
                        "content": "hi",
                        "extra": 1,
                    }
                ),
                "invalid_frame",
            ),
            (json.dumps({"type": "read", "room_id": "r1", "seq": "7"}), "invalid_frame"),
            (json.dumps({"type": "ping", "pad": "x" * 4096}), "too_large"),
            (b"\xc1\xc1", "invalid_frame"),  # not MessagePack
            (json.dumps({"type": "unsubscribe", "room_ids": ["r-never"]}), "not_subscribed"),
        ]
        for raw, code in cases:
            await ws.send(raw)
            error = await recv(ws)
            assert error["type"] == "error", raw
            assert error["code"] == code, (raw, error)
            assert error["detail"]
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}
        await other.send(json.dumps({"type": "ping"}))
        assert await recv(other) == {"type": "pong"}


async def test_a_missing_field_names_the_field_and_echoes_the_request_id(
    gw: Any, token: Callable[..., str]
) -> None:
    async with await open_ws(gw, token()) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "send", "id": "req-9", "room_id": "r1", "content": "x"}))
        error = await recv(ws)
    assert error["id"] == "req-9"
    assert error["op"] == "send"
    assert "client_msg_id" in error["detail"]


async def test_subscribing_to_a_room_one_is_not_a_member_of_is_an_error(
    gw: Any, fake_chat: Any, token: Callable[..., str]
) -> None:
    fake_chat.answers["CheckMembership"] = chat_pb2.CheckMembershipResponse(member_of=[])
    async with await open_ws(gw, token(sub="u-eve")) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "subscribe", "rooms": [{"room_id": "r-secret"}]}))
        error = await recv(ws)
    assert error["code"] == "not_member"
    assert error["room_id"] == "r-secret"
    assert not fake_chat.calls_to("GetHistory")
    (call,) = fake_chat.calls_to("CheckMembership")
    assert list(call.request.room_ids) == ["r-secret"]
    assert call.metadata["authorization"].startswith("Bearer ")


# -- requests ------------------------------------------------------------------------------------
async def test_send_is_acked_with_the_stored_seq_and_errors_keep_their_code(
    gw: Any, fake_chat: Any, token: Callable[..., str]
) -> None:
    def stored(request: Any) -> chat_pb2.SendMessageResponse:
        return chat_pb2.SendMessageResponse(
            message=chat_pb2.Message(
                message_id="m-7",
                room_id=request.room_id,
                seq=7,
                client_msg_id=request.client_msg_id,
            ),
            created=True,
        )

    fake_chat.answers["SendMessage"] = stored
    raw = token(sub="u-ada")
    async with await open_ws(gw, raw) as ws:
        await recv(ws)
        await ws.send(
            json.dumps(
                {"type": "send", "room_id": "r1", "client_msg_id": "c-1", "content": "hello"}
            )
        )
        ack = await recv(ws)
        assert ack == {
            "type": "ack",
            "op": "send",
            "client_msg_id": "c-1",
            "room_id": "r1",
            "seq": 7,
            "message_id": "m-7",
            "created": True,
        }
        fake_chat.answers["SendMessage"] = errors.Forbidden("you are not a member of this room")
        await ws.send(
            json.dumps(
                {"type": "send", "room_id": "r2", "client_msg_id": "c-2", "content": "hello"}
            )
        )
        error = await recv(ws)
    assert error["code"] == "forbidden"
    assert (error["op"], error["client_msg_id"], error["room_id"]) == ("send", "c-2", "r2")
    call = fake_chat.calls_to("SendMessage")[0]
    assert call.metadata["authorization"] == f"Bearer {raw}"
    assert call.request.content == "hello"


async def test_msgpack_clients_get_binary_frames_and_may_send_either(
    gw: Any, token: Callable[..., str]
) -> None:
    async with await open_ws(gw, token(), subprotocols=["aether.msgpack"]) as ws:
        assert ws.subprotocol == "aether.msgpack"
        ready = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert isinstance(ready, bytes)
        assert msgpack.unpackb(ready)["format"] == "msgpack"
        await ws.send(msgpack.packb({"type": "ping", "id": "b"}))
        assert msgpack.unpackb(await ws.recv()) == {"type": "pong", "id": "b"}
        await ws.send(json.dumps({"type": "ping", "id": "t"}))
        assert msgpack.unpackb(await ws.recv()) == {"type": "pong", "id": "t"}


async def test_frames_past_the_plan_rate_are_refused_with_an_error_frame(
    serve_gateway: Any, fake_chat: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(chat_grpc_target=fake_chat.address, chat_ws_rate_free=3)
    async with await open_ws(gw, token(plan="free")) as ws:
        await recv(ws)
        for _ in range(3):
            await ws.send(json.dumps({"type": "ping"}))
            assert (await recv(ws))["type"] == "pong"
        await ws.send(json.dumps({"type": "typing", "room_id": "r1"}))
        error = await recv(ws)
        assert error["code"] == "rate_limited"
        assert error["retry_after"] > 0
        assert error["room_id"] == "r1"
    async with await open_ws(gw, token(plan="admin")) as ws:  # admin: unlimited
        await recv(ws)
        for _ in range(10):
            await ws.send(json.dumps({"type": "ping"}))
            assert (await recv(ws))["type"] == "pong"


async def test_the_server_pings_and_closes_an_idle_connection_4008(
    serve_gateway: Any, fake_chat: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(
        chat_grpc_target=fake_chat.address, chat_ws_heartbeat_s=0.2, chat_ws_idle_timeout_s=0.8
    )
    async with await open_ws(gw, token()) as ws, await open_ws(gw, token()) as answering:
        await recv(ws)
        await recv(answering)
        assert (await recv(ws))["type"] == "ping"
        for _ in range(4):  # this one answers every ping: it stays
            assert (await until(answering, "ping"))["type"] == "ping"
            await answering.send(json.dumps({"type": "pong"}))
        code, reason = await closed_with(ws)
        assert code == 4008
        assert "idle" in reason
        await answering.send(json.dumps({"type": "ping"}))
        assert (await until(answering, "pong"))["type"] == "pong"


async def test_presence_is_reported_on_connect_and_disconnect(
    gw: Any, fake_chat: Any, token: Callable[..., str]
) -> None:
    async with await open_ws(gw, token(sub="u-pres")) as ws:
        await recv(ws)
        for _ in range(100):
            if fake_chat.calls_to("UpdatePresence"):
                break
            await asyncio.sleep(0.02)
    for _ in range(100):
        if len(fake_chat.calls_to("UpdatePresence")) >= 2:
            break
        await asyncio.sleep(0.02)
    online = [c.request.online for c in fake_chat.calls_to("UpdatePresence")]
    assert online == [True, False]


async def test_a_fresh_token_of_the_same_user_renews_another_users_closes(
    gw: Any, token: Callable[..., str]
) -> None:
    async with await open_ws(gw, token(sub="u-ada")) as ws:
        await recv(ws)
        fresh = token(sub="u-ada")
        await ws.send(json.dumps({"type": "auth", "token": fresh, "id": "r1"}))
        ack = await recv(ws)
        assert (ack["type"], ack["op"], ack["id"]) == ("ack", "auth", "r1")
        await ws.send(json.dumps({"type": "auth", "token": "garbage"}))
        assert (await recv(ws))["code"] == "invalid_token"  # still open
        await ws.send(json.dumps({"type": "auth", "token": token(sub="u-mallory")}))
        code, reason = await closed_with(ws)
    assert code == 4001
    assert "another user" in reason


async def test_the_connection_ends_when_its_token_expires(
    gw: Any, token: Callable[..., str]
) -> None:
    async with await open_ws(gw, token(exp=int(time.time()) + 2)) as ws:
        await recv(ws)
        code, reason = await closed_with(ws)
    assert code == 4001
    assert "expired" in reason
