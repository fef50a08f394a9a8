"""In-app alert notifications on the chat socket (chat/notify.py), through a real gateway
(uvicorn + WebSocket clients) and real Redis pub/sub. The test plays alerts: it PUBLISHes on
`<prefix>user:<user_id>` what alerts would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

TIMEOUT = 5.0
# alerts' client is lazy: the address is never dialled by these tests.
ALERTS = "127.0.0.1:9"


def notification(**overrides: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "notification",
        "id": "n-1",
        "firing_id": "f-1",
        "rule_id": "r-1",
        "symbol": "AAPL",
        "condition": "price_above",
        "title": "AAPL above 190",
        "body": "AAPL traded at 190.42",
        "price": 190.42,
        "market_time": "2026-12-07T20:00:00.000Z",
        "fired_at": "2026-12-07T20:00:00.120Z",
        "test": False,
    }
    frame.update(overrides)
    return frame


@pytest.fixture
async def gw(serve_gateway: Any, fake_chat: Any) -> Any:
    return await serve_gateway(chat_grpc_target=fake_chat.address, alerts_grpc_target=ALERTS)


async def open_ws(gateway: Any, token: str, **kwargs: Any) -> ClientConnection:
    ws = await connect(
        gateway.ws_url,
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        open_timeout=TIMEOUT,
        **kwargs,
    )
    await asyncio.wait_for(ws.recv(), TIMEOUT)  # ready
    return ws


async def subscribers(redis: Redis, channel: str, count: int) -> None:
    """Wait until `count` connections are subscribed to `channel` (the SUBSCRIBE that follows a
    socket's opening is asynchronous)."""
    numsub: list[tuple[Any, int]] = []
    for _ in range(100):
        numsub = await redis.pubsub_numsub(channel)
        if numsub[0][1] == count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{channel}: {numsub[0][1]} subscribers, expected {count}")


async def frame_of(ws: ClientConnection, kind: str) -> str | bytes:
    """The raw frame of type `kind`, skipping others (a server ping, say)."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
        obj = msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)
        if obj["type"] == kind:
            return raw


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def nothing_more(ws: ClientConnection, wait_s: float = 0.3) -> None:
    try:
        extra = await asyncio.wait_for(ws.recv(), wait_s)
    except TimeoutError:
        return
    pytest.fail(f"unexpected frame {extra!r}")


async def test_every_socket_of_the_user_gets_the_notification_and_no_one_else(
    gw: Any, redis: Redis, alerts_notify_prefix: str, token: Callable[..., str]
) -> None:
    phone = await open_ws(gw, token(sub="u-a"))
    laptop = await open_ws(gw, token(sub="u-a"))
    other = await open_ws(gw, token(sub="u-b"))
    channel = f"{alerts_notify_prefix}user:u-a"
    await subscribers(redis, channel, 1)  # one pub/sub connection, whatever the sockets
    await subscribers(redis, f"{alerts_notify_prefix}user:u-b", 1)
    delivered = sample("aether_gateway_chat_notifications_delivered_total")
    text = json.dumps(notification())
    await redis.publish(channel, text)
    for ws in (phone, laptop):
        assert await frame_of(ws, "notification") == text  # alerts' text, unchanged
    await nothing_more(other)
    assert sample("aether_gateway_chat_notifications_delivered_total") == delivered + 2
    for ws in (phone, laptop, other):
        await ws.close()


async def test_the_channel_is_given_up_with_the_users_last_socket(
    gw: Any, redis: Redis, alerts_notify_prefix: str, token: Callable[..., str]
) -> None:
    channel = f"{alerts_notify_prefix}user:u-a"
    first = await open_ws(gw, token(sub="u-a"))
    second = await open_ws(gw, token(sub="u-a"))
    await subscribers(redis, channel, 1)
    await first.close()
    await asyncio.sleep(0.2)
    await subscribers(redis, channel, 1)  # the second socket still follows it
    await redis.publish(channel, json.dumps(notification(id="n-2")))
    assert json.loads(await frame_of(second, "notification"))["id"] == "n-2"
    await second.close()
    await subscribers(redis, channel, 0)
    assert gw.resources.chat.hub.notifications.fanout.channels == 0
    # No replay: a socket opened afterwards gets only what is published from then on.
    again = await open_ws(gw, token(sub="u-a"))
    await subscribers(redis, channel, 1)
    await nothing_more(again)
    await again.close()


async def test_sockets_opened_and_closed_at_once_leave_no_subscription(
    gw: Any, redis: Redis, alerts_notify_prefix: str, token: Callable[..., str]
) -> None:
    # Closed before (or while) the SUBSCRIBE that their opening asked for runs.
    for _ in range(3):
        sockets = await asyncio.gather(*(open_ws(gw, token(sub="u-a")) for _ in range(5)))
        await asyncio.gather(*(ws.close() for ws in sockets))
    hub = gw.resources.chat.hub
    for _ in range(100):
        if not hub.users and not hub.notifications.fanout.channels:
            break
        await asyncio.sleep(0.05)
    assert hub.notifications.fanout.channels == 0
    await asyncio.sleep(0.2)
    await subscribers(redis, f"{alerts_notify_prefix}user:u-a", 0)


async def test_msgpack_clients_get_the_notification_as_msgpack(
    gw: Any, redis: Redis, alerts_notify_prefix: str, token: Callable[..., str]
) -> None:
    ws = await open_ws(gw, token(sub="u-a"), subprotocols=["aether.msgpack"])
    channel = f"{alerts_notify_prefix}user:u-a"
    await subscribers(redis, channel, 1)
    await redis.publish(channel, json.dumps(notification()))
    raw = await frame_of(ws, "notification")
    assert isinstance(raw, bytes)
    assert msgpack.unpackb(raw) == notification()
    await ws.close()


async def test_what_is_not_a_notification_is_not_forwarded(
    gw: Any, redis: Redis, alerts_notify_prefix: str, token: Callable[..., str]
) -> None:
    ws = await open_ws(gw, token(sub="u-a"))
    channel = f"{alerts_notify_prefix}user:u-a"
    await subscribers(redis, channel, 1)
    for junk in ("not json", "[1, 2]", json.dumps({"type": "message", "seq": 1})):
        await redis.publish(channel, junk)
    await nothing_more(ws)
    await redis.publish(channel, json.dumps(notification()))
    assert json.loads(await frame_of(ws, "notification")) == notification()
    await ws.close()


async def test_after_losing_redis_the_sockets_are_told_to_re_read_the_inbox(
    gw: Any, redis: Redis, alerts_notify_prefix: str, token: Callable[..., str]
) -> None:
    a = await open_ws(gw, token(sub="u-a"))
    b = await open_ws(gw, token(sub="u-b"))
    await subscribers(redis, f"{alerts_notify_prefix}user:u-a", 1)
    await subscribers(redis, f"{alerts_notify_prefix}user:u-b", 1)
    name = gw.resources.chat.hub.notifications.fanout.client_name
    killed = 0
    for client in await redis.client_list(_type="pubsub"):
        if client.get("name") == name:
            killed += 1
            await redis.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "ID", client["id"]
            )
    assert killed == 1
    for ws in (a, b):
        gap = json.loads(await frame_of(ws, "notification_gap"))
        assert "GET /api/notifications" in gap["detail"]
    # Subscribed again: delivery goes on.
    channel = f"{alerts_notify_prefix}user:u-a"
    await redis.publish(channel, json.dumps(notification(id="n-3")))
    assert json.loads(await frame_of(a, "notification"))["id"] == "n-3"
    await a.close()
    await b.close()


async def test_without_alerts_configured_nothing_is_subscribed(
    serve_gateway: Any,
    fake_chat: Any,
    redis: Redis,
    alerts_notify_prefix: str,
    token: Callable[..., str],
) -> None:
    gateway = await serve_gateway(chat_grpc_target=fake_chat.address)
    ws = await open_ws(gateway, token(sub="u-a"))
    assert gateway.resources.chat.hub.notifications is None
    await asyncio.sleep(0.2)
    await subscribers(redis, f"{alerts_notify_prefix}user:u-a", 0)
    await ws.close()
