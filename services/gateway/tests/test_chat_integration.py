"""Chat end to end through the gateway: real WebSocket clients against real uvicorn servers
serving the gateway app, the REAL chat service (aether_chat.app.ChatApp in-process on a free gRPC
port, against the session's MongoDB and Redis), fan-out through real Redis pub/sub. Auth is the
FakeAuth peer: the gateway and chat both fetch its JWKS and verify the tokens minted here."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from aether_chat.app import ChatApp
from aether_chat.config import ChatSettings
from aether_common.lifecycle import Component
from aether_devstack.endpoints import Endpoints

TIMEOUT = 10.0


@pytest.fixture
async def chat_service(
    aether_endpoints: Endpoints,
    mongo_db_name: str,
    redis_prefix: str,
    topic_prefix: str,
    chat_fanout_prefix: str,
    fake_auth: Any,
    token_issuer_audience: tuple[str, str],
) -> AsyncIterator[ChatApp]:
    issuer, audience = token_issuer_audience
    settings = ChatSettings.model_validate(
        {
            "environment": "test",
            "mongo_url": aether_endpoints.mongo_url,
            "mongo_database": mongo_db_name,
            "redis_url": aether_endpoints.redis_url,
            "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
            "auth_grpc_target": fake_auth.address,
            "jwt_issuer": issuer,
            "jwt_audience": audience,
            "redis_prefix": redis_prefix + "chat:",
            "fanout_prefix": chat_fanout_prefix,
            "topic_prefix": topic_prefix,
            "mongo_pool_size": 20,
        }
    )
    app = ChatApp(settings, grpc_host="127.0.0.1", grpc_port=0)
    started: list[Component] = []
    try:
        for component in app.components(events=False):
            await component.start()
            started.append(component)
        yield app
    finally:
        for component in reversed(started):
            await component.stop()


@pytest.fixture
async def gw(serve_gateway: Any, chat_service: ChatApp) -> Any:
    return await serve_gateway(chat_grpc_target=chat_service.grpc.address)


class User:
    """A person with a token, talking to one gateway over REST and WebSockets."""

    def __init__(self, gateway: Any, token: str, user_id: str) -> None:
        self.gateway = gateway
        self.id = user_id
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}
        self.http = httpx.AsyncClient(base_url=gateway.http_url, headers=self.headers, timeout=10)

    async def ws(self, **kwargs: Any) -> Socket:
        ws = await connect(
            self.gateway.ws_url,
            additional_headers=self.headers,
            compression=None,
            open_timeout=TIMEOUT,
            max_size=None,
            **kwargs,
        )
        sock = Socket(ws)
        assert (await sock.next("ready"))["user_id"] == self.id
        return sock

    async def create_room(
        self, visibility: str = "public", members: list[str] | None = None
    ) -> str:
        response = await self.http.post(
            "/api/chat/room",
            json={"name": "Trading floor", "visibility": visibility, "member_ids": members or []},
        )
        assert response.status_code == 201, response.text
        room_id: str = response.json()["room_id"]
        return room_id

    async def close(self) -> None:
        await self.http.aclose()


@pytest.fixture
def make_user(token: Callable[..., str]) -> Any:
    users: list[User] = []

    def make(gateway: Any, name: str = "user") -> User:
        user_id = f"{name}-{uuid.uuid4().hex[:8]}"
        user = User(gateway, token(sub=user_id), user_id)
        users.append(user)
        return user

    return make


class Socket:
    """A client connection that keeps the frames a test did not ask for yet (an ack may come
    after the message it acknowledges, or before)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.backlog: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def _read(self, wait_s: float = TIMEOUT) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), wait_s))
        return frame

    async def next(self, kind: str, **match: Any) -> dict[str, Any]:
        def wanted(frame: dict[str, Any]) -> bool:
            return frame["type"] == kind and all(frame.get(k) == v for k, v in match.items())

        for index, frame in enumerate(self.backlog):
            if wanted(frame):
                return self.backlog.pop(index)
        while True:
            frame = await self._read()
            if wanted(frame):
                return frame
            self.backlog.append(frame)

    async def messages(self, count: int) -> list[dict[str, Any]]:
        return [await self.next("message") for _ in range(count)]

    async def nothing_more(self, kind: str = "message", wait_s: float = 0.5) -> None:
        assert not [f for f in self.backlog if f["type"] == kind], self.backlog
        try:
            while True:
                frame = await self._read(wait_s)
                if frame["type"] == kind:
                    pytest.fail(f"unexpected frame {frame!r}")
        except TimeoutError:
            return

    async def close(self) -> None:
        await self.ws.close()


async def subscribe(sock: Socket, room_id: str, after_seq: int | None = None) -> list[int]:
    """Subscribe and read up to `synced`: the seqs of the messages delivered to catch up."""
    cursor: dict[str, Any] = {"room_id": room_id}
    if after_seq is not None:
        cursor["after_seq"] = after_seq
    await sock.send({"type": "subscribe", "rooms": [cursor]})
    await sock.next("subscribed", room_id=room_id)
    seqs: list[int] = []
    while True:
        frame = await sock._read()
        if frame["type"] == "synced":
            return seqs
        if frame["type"] == "message":
            seqs.append(frame["seq"])
        else:
            sock.backlog.append(frame)


async def send(sock: Socket, room_id: str, content: str) -> dict[str, Any]:
    client_msg_id = uuid.uuid4().hex
    await sock.send(
        {"type": "send", "room_id": room_id, "client_msg_id": client_msg_id, "content": content}
    )
    return await sock.next("ack", client_msg_id=client_msg_id)


# -- the tests ------------------------------------------------------------------------------------
async def test_two_users_in_a_room_see_each_others_messages_in_order(
    gw: Any, make_user: Any
) -> None:
    ada, bob = make_user(gw, "ada"), make_user(gw, "bob")
    room_id = await ada.create_room("private", members=[bob.id])
    joined = await bob.http.post(f"/api/chat/rooms/{room_id}/join")
    assert joined.status_code == 200, joined.text  # already a member: joining changes nothing
    ada_ws, bob_ws = await ada.ws(), await bob.ws()
    await subscribe(ada_ws, room_id)
    await subscribe(bob_ws, room_id)

    for index in range(5):
        ack = await send(ada_ws if index % 2 == 0 else bob_ws, room_id, f"hello {index}")
        assert ack["seq"] == index + 1
        assert ack["message_id"]
    for ws in (ada_ws, bob_ws):
        got = await ws.messages(5)
        assert [m["seq"] for m in got] == [1, 2, 3, 4, 5]
        assert [m["message"]["content"] for m in got] == [f"hello {i}" for i in range(5)]
        assert [m["message"]["sender_id"] for m in got] == [ada.id, bob.id, ada.id, bob.id, ada.id]
    history = await bob.http.get("/api/chat/history", params={"room_id": room_id})
    assert [m["seq"] for m in history.json()["messages"]] == [1, 2, 3, 4, 5]
    assert history.json()["messages"][0] == got[0]["message"]  # live and stored look the same
    for ws in (ada_ws, bob_ws):
        await ws.close()


async def test_a_non_member_can_neither_read_nor_subscribe(
    gw: Any, make_user: Any, error_shape: Any
) -> None:
    ada, eve = make_user(gw, "ada"), make_user(gw, "eve")
    room_id = await ada.create_room("private")
    ada_ws = await ada.ws()
    await subscribe(ada_ws, room_id)
    eve_ws = await eve.ws()
    await eve_ws.send({"type": "subscribe", "rooms": [{"room_id": room_id}]})
    error = await eve_ws.next("error")
    assert (error["type"], error["code"], error["room_id"]) == ("error", "not_member", room_id)
    await eve_ws.send(
        json.dumps(
            {"type": "send", "room_id": room_id, "client_msg_id": "e1", "content": "let me in"}
        )
    )
    refused = await eve_ws.next("error")
    assert refused["code"] == "forbidden"  # the room exists; eve is not in it
    assert refused["client_msg_id"] == "e1"
    history = await eve.http.get("/api/chat/history", params={"room_id": room_id})
    error_shape(history, 403)

    await send(ada_ws, room_id, "members only")
    assert [m["seq"] for m in await ada_ws.messages(1)] == [1]
    await eve_ws.nothing_more()
    await ada_ws.close()
    await eve_ws.close()


async def test_a_reconnect_with_the_last_seq_gets_what_it_missed_exactly_once(
    gw: Any, make_user: Any
) -> None:
    ada, bob = make_user(gw, "ada"), make_user(gw, "bob")
    room_id = await ada.create_room("public")
    assert (await bob.http.post(f"/api/chat/rooms/{room_id}/join")).status_code == 200
    ada_ws, bob_ws = await ada.ws(), await bob.ws()
    await subscribe(ada_ws, room_id)
    await subscribe(bob_ws, room_id)
    for index in range(3):
        await send(ada_ws, room_id, f"before {index}")
    assert [m["seq"] for m in await bob_ws.messages(3)] == [1, 2, 3]
    await bob_ws.close()  # bob goes offline having seen seq 3

    for index in range(4):
        await send(ada_ws, room_id, f"while away {index}")
    bob_ws = await bob.ws()
    sending = asyncio.create_task(send(ada_ws, room_id, "during the catch-up"))
    caught_up = await subscribe(bob_ws, room_id, after_seq=3)
    await sending
    live = (
        [m["seq"] for m in await bob_ws.messages(8 - 3 - len(caught_up))]
        if len(caught_up) < 5
        else []
    )
    delivered = caught_up + live
    assert delivered == [4, 5, 6, 7, 8]
    await send(ada_ws, room_id, "after")
    assert [m["seq"] for m in await bob_ws.messages(1)] == [9]
    await bob_ws.nothing_more()
    await ada_ws.close()
    await bob_ws.close()


async def test_users_on_two_gateways_talk(
    serve_gateway: Any, chat_service: ChatApp, make_user: Any
) -> None:
    one = await serve_gateway(chat_grpc_target=chat_service.grpc.address)
    two = await serve_gateway(chat_grpc_target=chat_service.grpc.address)
    ada, bob = make_user(one, "ada"), make_user(two, "bob")
    room_id = await ada.create_room("public")
    assert (await bob.http.post(f"/api/chat/rooms/{room_id}/join")).status_code == 200
    ada_ws, bob_ws = await ada.ws(), await bob.ws()
    await subscribe(ada_ws, room_id)
    await subscribe(bob_ws, room_id)
    await send(ada_ws, room_id, "from gateway one")
    await send(bob_ws, room_id, "from gateway two")
    for ws in (ada_ws, bob_ws):
        got = await ws.messages(2)
        assert [m["message"]["content"] for m in got] == ["from gateway one", "from gateway two"]
    await ada_ws.close()
    await bob_ws.close()


async def test_a_removed_member_is_unsubscribed_at_once(gw: Any, make_user: Any) -> None:
    ada, bob = make_user(gw, "ada"), make_user(gw, "bob")
    room_id = await ada.create_room("public")
    assert (await bob.http.post(f"/api/chat/rooms/{room_id}/join")).status_code == 200
    ada_ws, bob_ws = await ada.ws(), await bob.ws()
    await subscribe(ada_ws, room_id)
    await subscribe(bob_ws, room_id)
    removed = await ada.http.delete(f"/api/chat/rooms/{room_id}/members/{bob.id}")
    assert removed.status_code == 204, removed.text
    gone = await bob_ws.next("unsubscribed")
    assert gone == {"type": "unsubscribed", "room_id": room_id, "reason": "removed"}
    await send(ada_ws, room_id, "bob is gone")
    assert len(await ada_ws.messages(1)) == 1
    await bob_ws.nothing_more()
    await ada_ws.close()
    await bob_ws.close()


async def test_a_slow_client_is_closed_on_overflow_while_others_keep_receiving(
    serve_gateway: Any,
    chat_service: ChatApp,
    make_user: Any,
    redis: Redis,
    chat_fanout_prefix: str,
) -> None:
    gw = await serve_gateway(chat_grpc_target=chat_service.grpc.address, chat_ws_queue_frames=32)
    ada, bob = make_user(gw, "ada"), make_user(gw, "bob")
    room_id = await ada.create_room("public")
    assert (await bob.http.post(f"/api/chat/rooms/{room_id}/join")).status_code == 200
    fast = await ada.ws()
    slow = await bob.ws(max_queue=1)
    await subscribe(fast, room_id)
    await subscribe(slow, room_id)
    slow.ws.transport.pause_reading()
    # Megabytes are needed before the kernel buffers fill and the gateway's queue is reached:
    # large frames on the room's channel, as chat publishes them.
    pad = "x" * 60_000
    total = 200

    async def flood() -> None:
        for index in range(total):
            frame = {
                "type": "typing",
                "room_id": room_id,
                "user_id": ada.id,
                "typing": True,
                "n": index,
                "pad": pad,
            }
            await redis.publish(f"{chat_fanout_prefix}room:{room_id}", json.dumps(frame))

    async def read_fast() -> int:
        seen = 0
        while seen < total:
            if (await fast._read()).get("n") is not None:
                seen += 1
        return seen

    _, seen = await asyncio.gather(flood(), read_fast())
    assert seen == total
    await send(fast, room_id, "still here")
    assert len(await fast.messages(1)) == 1
    slow.ws.transport.resume_reading()
    try:
        while True:
            await asyncio.wait_for(slow.ws.recv(), TIMEOUT)
    except ConnectionClosed:
        pass
    assert slow.ws.close_code == 4009
    await fast.close()


async def test_bad_frames_get_errors_and_leave_other_connections_alone(
    gw: Any, make_user: Any
) -> None:
    ada, bob = make_user(gw, "ada"), make_user(gw, "bob")
    room_id = await ada.create_room("public")
    assert (await bob.http.post(f"/api/chat/rooms/{room_id}/join")).status_code == 200
    ada_ws, bob_ws = await ada.ws(), await bob.ws()
    await subscribe(ada_ws, room_id)
    await subscribe(bob_ws, room_id)
    not_joined = await make_user(gw, "carl").create_room("public")
    for raw, code in [
        ("{oops", "invalid_frame"),
        (json.dumps({"type": "shout"}), "unknown_type"),
        (json.dumps({"type": "send", "room_id": room_id}), "invalid_frame"),
        (json.dumps({"type": "ping", "pad": "x" * 70_000}), "too_large"),
        (json.dumps({"type": "unsubscribe", "room_ids": [not_joined]}), "not_subscribed"),
    ]:
        await bob_ws.send(raw)
        error = await bob_ws.next("error")
        assert error["code"] == code, (raw, error)
    await bob_ws.send(
        json.dumps({"type": "send", "room_id": not_joined, "client_msg_id": "x1", "content": "hi"})
    )
    refused = await bob_ws.next("error")
    assert refused["code"] == "forbidden"  # the room exists; bob is not in it
    await bob_ws.send(json.dumps({"type": "subscribe", "rooms": [{"room_id": not_joined}]}))
    assert (await bob_ws.next("error"))["code"] == "not_member"

    await send(ada_ws, room_id, "unaffected")
    assert [m["message"]["content"] for m in await ada_ws.messages(1)] == ["unaffected"]
    assert [m["message"]["content"] for m in await bob_ws.messages(1)] == ["unaffected"]
    await ada_ws.close()
    await bob_ws.close()


async def test_rest_create_send_history_and_bad_input(
    gw: Any, make_user: Any, error_shape: Any
) -> None:
    ada = make_user(gw, "ada")
    room_id = await ada.create_room("public")
    body = {"room_id": room_id, "client_msg_id": "c-1", "content": "over REST"}
    first = await ada.http.post("/api/chat/message", json=body)
    assert first.status_code == 201, first.text
    again = await ada.http.post("/api/chat/message", json=body)
    assert again.status_code == 200
    assert again.json()["message"]["message_id"] == first.json()["message"]["message_id"]
    second = await ada.http.post("/api/chat/message", json={"room_id": room_id, "content": "2"})
    assert second.json()["message"]["seq"] == 2
    history = await ada.http.get("/api/chat/history", params={"room_id": room_id, "after_seq": 1})
    assert [m["content"] for m in history.json()["messages"]] == ["2"]
    older = await ada.http.get("/api/chat/history", params={"room_id": room_id, "before_seq": 2})
    assert [m["content"] for m in older.json()["messages"]] == ["over REST"]
    rooms = await ada.http.get("/api/chat/rooms")
    assert room_id in [r["room"]["room_id"] for r in rooms.json()["rooms"]]

    error_shape(await ada.http.post("/api/chat/room", json={"name": ""}), 400)
    error_shape(await ada.http.post("/api/chat/message", json={"room_id": room_id}), 400)
    error_shape(
        await ada.http.post("/api/chat/message", json={"room_id": room_id, "content": "x" * 5000}),
        400,
    )  # chat's own limit (4,000 characters)
    error_shape(
        await ada.http.get("/api/chat/history", params={"room_id": room_id, "limit": 1000}), 400
    )
    missing = await ada.http.get(f"/api/chat/rooms/{uuid.uuid4()}")
    error_shape(missing, 404)
    error_shape(await ada.http.get("/api/chat/rooms/not-a-uuid"), 400)  # chat's own check
    status = await ada.http.get("/api/status")
    assert status.json()["dependencies"]["chat"]["ok"] is True


async def test_edit_delete_typing_and_read_reach_the_other_member(gw: Any, make_user: Any) -> None:
    ada, bob = make_user(gw, "ada"), make_user(gw, "bob")
    room_id = await ada.create_room("public")
    assert (await bob.http.post(f"/api/chat/rooms/{room_id}/join")).status_code == 200
    ada_ws, bob_ws = await ada.ws(), await bob.ws()
    await subscribe(ada_ws, room_id)
    await subscribe(bob_ws, room_id)
    ack = await send(ada_ws, room_id, "first draft")
    seq = ack["seq"]
    assert (await bob_ws.next("message"))["seq"] == seq

    await ada_ws.send({"type": "edit", "room_id": room_id, "seq": seq, "content": "final"})
    assert (await ada_ws.next("ack", op="edit"))["seq"] == seq
    edited = await bob_ws.next("edit")
    assert (edited["seq"], edited["message"]["content"]) == (seq, "final")
    assert edited["message"]["edited_at"]

    await ada_ws.send({"type": "typing", "room_id": room_id, "typing": True})
    typing = await bob_ws.next("typing")
    assert (typing["user_id"], typing["typing"]) == (ada.id, True)

    await bob_ws.send({"type": "read", "room_id": room_id, "seq": seq})
    read_ack = await bob_ws.next("ack", op="read")
    assert read_ack["last_read_seq"] == seq
    receipt = await ada_ws.next("read")
    assert (receipt["user_id"], receipt["seq"]) == (bob.id, seq)

    await ada_ws.send({"type": "delete", "room_id": room_id, "seq": seq})
    await ada_ws.next("ack", op="delete")
    deleted = await bob_ws.next("delete")
    assert (deleted["seq"], deleted["deleted_by"]) == (seq, ada.id)

    # A late joiner resuming from 0 gets the message as it is now: deleted, content empty.
    late = await bob.ws()
    assert await subscribe(late, room_id, after_seq=0) == [seq]
    for sock in (ada_ws, bob_ws, late):
        await sock.close()
