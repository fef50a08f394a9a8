"""Fan-out and delivery guarantees through a real gateway (uvicorn + WebSocket clients) and real
Redis pub/sub. chat is played by a scripted peer holding one room's messages: the test decides
what is stored and what is published, so it can lose, duplicate and reorder frames at will."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from aether.chat.v1 import chat_pb2
from aether_common import errors

TIMEOUT = 5.0


class StoredRoom:
    """One room's messages as chat would keep them, and the frames chat would publish."""

    def __init__(self, redis: Redis, prefix: str, room_id: str = "room-1") -> None:
        self.redis = redis
        self.room_id = room_id
        self.channel = f"{prefix}room:{room_id}"
        self.messages: list[chat_pb2.Message] = []
        self.history_delay_s = 0.0
        self.history_calls: list[tuple[int, int]] = []
        self.members: set[str] | None = None  # None: everyone

    def store(self, content: str = "") -> chat_pb2.Message:
        seq = len(self.messages) + 1
        created = Timestamp()
        created.FromDatetime(datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
        message = chat_pb2.Message(
            message_id=f"m-{seq}",
            room_id=self.room_id,
            seq=seq,
            sender_id="u-sender",
            client_msg_id=f"c-{seq}",
            content=content or f"message {seq}",
            created_at=created,
        )
        self.messages.append(message)
        return message

    def frame(self, message: chat_pb2.Message) -> dict[str, Any]:
        return {
            "type": "message",
            "room_id": self.room_id,
            "seq": message.seq,
            "message": {
                "message_id": message.message_id,
                "room_id": self.room_id,
                "seq": message.seq,
                "sender_id": message.sender_id,
                "client_msg_id": message.client_msg_id,
                "content": message.content,
                "mentions": [],
                "reply_to_seq": 0,
                "created_at": "2025-01-02T03:04:05.678Z",
                "edited_at": None,
                "deleted": False,
            },
        }

    async def publish(self, frame: dict[str, Any]) -> None:
        await self.redis.publish(self.channel, json.dumps(frame))

    async def send(self, content: str = "") -> chat_pb2.Message:
        message = self.store(content)
        await self.publish(self.frame(message))
        return message

    async def history(self, request: chat_pb2.GetHistoryRequest) -> chat_pb2.GetHistoryResponse:
        self.history_calls.append((request.after_seq, request.limit))
        if self.history_delay_s:
            await asyncio.sleep(self.history_delay_s)
        limit = request.limit or 50
        if request.after_seq:
            page = [m for m in self.messages if m.seq > request.after_seq][: limit + 1]
        else:
            page = self.messages[-limit:]
        has_more = bool(request.after_seq) and len(page) > limit
        return chat_pb2.GetHistoryResponse(
            messages=page[:limit], has_more=has_more, last_seq=len(self.messages)
        )

    def membership(self, request: chat_pb2.CheckMembershipRequest) -> Any:
        return chat_pb2.CheckMembershipResponse(member_of=list(request.room_ids))


@pytest.fixture
def room(fake_chat: Any, redis: Redis, chat_fanout_prefix: str) -> StoredRoom:
    stored = StoredRoom(redis, chat_fanout_prefix)
    fake_chat.answers["GetHistory"] = stored.history
    fake_chat.answers["CheckMembership"] = stored.membership
    return stored


@pytest.fixture
async def gw(serve_gateway: Any, fake_chat: Any) -> Any:
    return await serve_gateway(chat_grpc_target=fake_chat.address, chat_gap_grace_s=0.05)


async def open_ws(gateway: Any, token: str, **kwargs: Any) -> ClientConnection:
    ws = await connect(
        gateway.ws_url,
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        open_timeout=TIMEOUT,
        max_size=None,
        **kwargs,
    )
    ready = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert ready["type"] == "ready"
    return ws


async def recv(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return frame


async def subscribe(ws: ClientConnection, room_id: str, after_seq: int | None = None) -> None:
    cursor: dict[str, Any] = {"room_id": room_id}
    if after_seq is not None:
        cursor["after_seq"] = after_seq
    await ws.send(json.dumps({"type": "subscribe", "rooms": [cursor]}))
    assert (await recv(ws))["type"] == "subscribed"


async def messages_until_synced(ws: ClientConnection) -> list[int]:
    seqs: list[int] = []
    while True:
        frame = await recv(ws)
        if frame["type"] == "synced":
            return seqs
        assert frame["type"] == "message", frame
        seqs.append(frame["seq"])


async def seqs(ws: ClientConnection, count: int) -> list[int]:
    got: list[int] = []
    while len(got) < count:
        frame = await recv(ws)
        if frame["type"] == "message":
            got.append(frame["seq"])
    return got


async def nothing_more(ws: ClientConnection, wait_s: float = 0.3) -> None:
    try:
        extra = await asyncio.wait_for(ws.recv(), wait_s)
    except TimeoutError:
        return
    pytest.fail(f"unexpected frame {extra!r}")


async def read_until_closed(ws: ClientConnection) -> None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed:
        return


async def test_live_messages_reach_every_subscriber_in_order(
    gw: Any, room: StoredRoom, token: Callable[..., str]
) -> None:
    room.store()
    room.store()  # two already stored: a subscriber without after_seq starts after them
    a = await open_ws(gw, token(sub="u-a"))
    b = await open_ws(gw, token(sub="u-b"))
    for ws in (a, b):
        await subscribe(ws, room.room_id)
        assert await messages_until_synced(ws) == []
    for _ in range(30):
        await room.send()
    assert await seqs(a, 30) == list(range(3, 33))
    assert await seqs(b, 30) == list(range(3, 33))
    await nothing_more(a)
    first = room.frame(room.messages[2])
    await a.close()
    await b.close()
    # The frame is chat's, forwarded unchanged.
    assert first["message"]["created_at"] == "2025-01-02T03:04:05.678Z"


async def test_duplicates_and_stale_frames_are_dropped(
    gw: Any, room: StoredRoom, token: Callable[..., str]
) -> None:
    ws = await open_ws(gw, token())
    await subscribe(ws, room.room_id)
    await messages_until_synced(ws)
    one, two = room.store(), room.store()
    for message in (one, two, two, one):
        await room.publish(room.frame(message))
    await room.send()
    assert await seqs(ws, 3) == [1, 2, 3]
    await nothing_more(ws)
    await ws.close()


async def test_a_lost_frame_is_filled_from_history_in_order(
    gw: Any, room: StoredRoom, token: Callable[..., str]
) -> None:
    ws = await open_ws(gw, token())
    await subscribe(ws, room.room_id)
    await messages_until_synced(ws)
    await room.send()
    room.store()  # stored, never published: pub/sub lost it
    room.store()
    await room.send()
    assert await seqs(ws, 4) == [1, 2, 3, 4]
    assert (1, 100) in room.history_calls
    await room.send()
    assert await seqs(ws, 1) == [5]
    await nothing_more(ws)
    await ws.close()


async def test_reordered_frames_within_the_grace_need_no_history(
    serve_gateway: Any, fake_chat: Any, room: StoredRoom, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(chat_grpc_target=fake_chat.address, chat_gap_grace_s=1.0)
    ws = await open_ws(gw, token())
    await subscribe(ws, room.room_id)
    await messages_until_synced(ws)
    calls = len(room.history_calls)
    one, two, three = room.store(), room.store(), room.store()
    for message in (one, three, two):
        await room.publish(room.frame(message))
    assert await seqs(ws, 3) == [1, 2, 3]
    assert len(room.history_calls) == calls
    await ws.close()


async def test_resume_delivers_everything_missed_once_then_live(
    gw: Any, room: StoredRoom, token: Callable[..., str]
) -> None:
    for _ in range(250):
        room.store()
    room.history_delay_s = 0.2  # live frames arrive while history is read
    ws = await open_ws(gw, token())
    await subscribe(ws, room.room_id, after_seq=5)
    await asyncio.sleep(0.1)
    await room.send()  # 251 and 252 published during the catch-up
    await room.send()
    got = await messages_until_synced(ws)
    assert got == list(range(6, 253))
    await room.send()
    assert await seqs(ws, 1) == [253]
    await nothing_more(ws)
    assert [after for after, _ in room.history_calls] == [5, 105, 205]
    await ws.close()


async def test_a_removed_member_stops_receiving_at_once(
    gw: Any, room: StoredRoom, token: Callable[..., str]
) -> None:
    stays = await open_ws(gw, token(sub="u-stays"))
    goes = await open_ws(gw, token(sub="u-goes"))
    goes_too = await open_ws(gw, token(sub="u-goes"))  # a second device of the same user
    for ws in (stays, goes, goes_too):
        await subscribe(ws, room.room_id)
        await messages_until_synced(ws)
    await room.publish(
        {"type": "member", "room_id": room.room_id, "user_id": "u-goes", "event": "removed"}
    )
    for ws in (goes, goes_too):
        assert (await recv(ws))["type"] == "member"
        assert await recv(ws) == {
            "type": "unsubscribed",
            "room_id": room.room_id,
            "reason": "removed",
        }
    await room.send()
    assert (await recv(stays))["type"] == "member"
    assert await seqs(stays, 1) == [1]
    await nothing_more(goes)
    await nothing_more(goes_too)
    for ws in (stays, goes, goes_too):
        await ws.close()


async def test_typing_presence_and_read_frames_are_forwarded_as_published(
    gw: Any, room: StoredRoom, token: Callable[..., str]
) -> None:
    ws = await open_ws(gw, token())
    await subscribe(ws, room.room_id)
    await messages_until_synced(ws)
    frames = [
        {"type": "typing", "room_id": room.room_id, "user_id": "u-x", "typing": True},
        {"type": "presence", "room_id": room.room_id, "user_id": "u-x", "online": False},
        {"type": "read", "room_id": room.room_id, "user_id": "u-x", "seq": 3},
        {
            "type": "delete",
            "room_id": room.room_id,
            "seq": 1,
            "message_id": "m-1",
            "deleted_by": "u-x",
        },
    ]
    for frame in frames:
        await room.publish(frame)
    assert [await recv(ws) for _ in frames] == frames
    await ws.close()


async def test_unsubscribe_stops_delivery_and_the_gateway_leaves_the_channel(
    gw: Any, room: StoredRoom, token: Callable[..., str], redis: Redis
) -> None:
    ws = await open_ws(gw, token())
    await subscribe(ws, room.room_id)
    await messages_until_synced(ws)
    assert (await redis.pubsub_numsub(room.channel))[0][1] == 1
    await ws.send(json.dumps({"type": "unsubscribe", "room_ids": [room.room_id], "id": "u1"}))
    assert await recv(ws) == {
        "type": "unsubscribed",
        "room_id": room.room_id,
        "reason": "client",
        "id": "u1",
    }
    await room.send()
    await nothing_more(ws)
    for _ in range(50):
        if (await redis.pubsub_numsub(room.channel))[0][1] == 0:
            break
        await asyncio.sleep(0.02)
    assert (await redis.pubsub_numsub(room.channel))[0][1] == 0
    await ws.close()


async def test_one_pubsub_connection_per_gateway_whatever_the_rooms_and_clients(
    gw: Any, fake_chat: Any, room: StoredRoom, token: Callable[..., str], redis: Redis
) -> None:
    clients = [await open_ws(gw, token()) for _ in range(5)]
    for index, ws in enumerate(clients):
        for room_id in (room.room_id, f"other-{index}"):
            await subscribe(ws, room_id)
            await messages_until_synced(ws)
    channels = [room.channel] + [f"{room.channel[: -len(room.room_id)]}other-{i}" for i in range(5)]
    assert [count for _, count in await redis.pubsub_numsub(*channels)] == [1] * 6
    # ...and they are all on ONE connection, this gateway's.
    name = gw.resources.chat.hub.fanout.client_name
    ours = [c for c in await redis.client_list(_type="pubsub") if c.get("name") == name]
    assert [int(c["sub"]) for c in ours] == [6]
    for ws in clients:
        await ws.close()


async def test_a_slow_client_is_closed_on_overflow_while_others_keep_receiving(
    serve_gateway: Any, fake_chat: Any, room: StoredRoom, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(chat_grpc_target=fake_chat.address, chat_ws_queue_frames=16)
    fast = await open_ws(gw, token(sub="u-fast"))
    slow = await open_ws(gw, token(sub="u-slow"), max_queue=1)
    for ws in (fast, slow):
        await subscribe(ws, room.room_id)
        await messages_until_synced(ws)
    slow.transport.pause_reading()  # never reads: the kernel buffers fill, then our queue
    pad = "x" * 60_000
    total = 200

    async def publish() -> None:
        for index in range(total):
            await room.publish(
                {
                    "type": "typing",
                    "room_id": room.room_id,
                    "user_id": "u-x",
                    "typing": True,
                    "n": index,
                    "pad": pad,
                }
            )

    async def read_fast() -> list[int]:
        got: list[int] = []
        while len(got) < total:
            frame = await recv(fast)
            got.append(frame["n"])
        return got

    _, got = await asyncio.gather(publish(), read_fast())
    assert got == list(range(total))
    hub = gw.resources.chat.hub
    for _ in range(100):
        if len(hub.connections) == 1:
            break
        await asyncio.sleep(0.05)
    assert [c.user_id for c in hub.connections] == ["u-fast"]
    slow.transport.resume_reading()
    await read_until_closed(slow)
    assert slow.close_code == 4009
    assert "too slow" in (slow.close_reason or "")
    await fast.close()


async def test_after_losing_redis_the_gateway_catches_up_from_history(
    gw: Any, room: StoredRoom, token: Callable[..., str], redis: Redis
) -> None:
    ws = await open_ws(gw, token())
    await subscribe(ws, room.room_id)
    await messages_until_synced(ws)
    await room.send()
    assert await seqs(ws, 1) == [1]
    name = gw.resources.chat.hub.fanout.client_name
    for client in await redis.client_list(_type="pubsub"):
        if client.get("name") == name:
            await redis.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "ID", client["id"]
            )
    await room.send()  # published while the gateway is not subscribed: lost
    assert await seqs(ws, 1) == [2]  # fetched after the reconnect, no new publish needed
    await room.send()
    assert await seqs(ws, 1) == [3]
    await ws.close()


async def test_two_gateways_deliver_the_same_room(
    serve_gateway: Any, fake_chat: Any, room: StoredRoom, token: Callable[..., str]
) -> None:
    one = await serve_gateway(chat_grpc_target=fake_chat.address)
    two = await serve_gateway(chat_grpc_target=fake_chat.address)
    a = await open_ws(one, token(sub="u-a"))
    b = await open_ws(two, token(sub="u-b"))
    for ws in (a, b):
        await subscribe(ws, room.room_id)
        await messages_until_synced(ws)
    for _ in range(10):
        await room.send()
    assert await seqs(a, 10) == list(range(1, 11))
    assert await seqs(b, 10) == list(range(1, 11))
    await a.close()
    await b.close()


async def test_msgpack_clients_get_the_same_frames_in_messagepack(
    gw: Any, room: StoredRoom, token: Callable[..., str]
) -> None:
    text_ws = await open_ws(gw, token())
    packed_ws = await connect(
        gw.ws_url,
        additional_headers={"Authorization": f"Bearer {token()}"},
        subprotocols=["aether.msgpack"],  # type: ignore[list-item]
        compression=None,
    )
    assert msgpack.unpackb(await packed_ws.recv())["type"] == "ready"
    await subscribe(text_ws, room.room_id)
    await messages_until_synced(text_ws)
    await packed_ws.send(json.dumps({"type": "subscribe", "rooms": [{"room_id": room.room_id}]}))
    kinds = [
        msgpack.unpackb(await asyncio.wait_for(packed_ws.recv(), TIMEOUT))["type"] for _ in range(2)
    ]
    assert kinds == ["subscribed", "synced"]
    message = await room.send()
    as_text = await recv(text_ws)
    raw = await asyncio.wait_for(packed_ws.recv(), TIMEOUT)
    assert isinstance(raw, bytes)
    assert msgpack.unpackb(raw) == as_text == room.frame(message)
    await text_ws.close()
    await packed_ws.close()


async def test_when_history_stays_unavailable_the_room_goes_live_and_the_client_is_told(
    gw: Any, fake_chat: Any, room: StoredRoom, token: Callable[..., str]
) -> None:
    fake_chat.answers["GetHistory"] = errors.Unavailable("chat is down")
    ws = await open_ws(gw, token())
    await subscribe(ws, room.room_id, after_seq=3)
    error = await recv(ws)
    assert (error["type"], error["code"], error["room_id"]) == (
        "error",
        "history_unavailable",
        room.room_id,
    )
    assert error["after_seq"] == 3
    assert (await recv(ws))["type"] == "synced"
    fake_chat.answers["GetHistory"] = room.history
    for _ in range(4):
        room.store()
    await room.send()  # seq 5: past the hole, filled once history answers again
    assert await seqs(ws, 2) == [4, 5]
    await ws.close()
