"""WS /api/market/stream: a real uvicorn serves the gateway, frames are PUBLISHed on the real
Redis channels charts publishes on (`<prefix>symbol:<SYMBOL>`), charts' ListSymbols is a
scripted gRPC peer.

To show that a client did NOT get a frame, the tests publish it, then a frame the client does
follow: Redis delivers one subscriber's messages in publish order, so the next frame the client
reads being the second one proves the first was not sent to it.
"""

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
from websockets.exceptions import ConnectionClosed

from aether.charts.v1 import charts_pb2
from aether_common import errors
from aether_common.access_tokens import AccessToken
from aether_devstack.servers import free_port
from aether_gateway.market.hub import MarketConnection, MarketHub

TIMEOUT = 5.0
KNOWN = {"AAPL", "MSFT", "EURUSD", "BRK.B", "GOOG", "IBM", "AMZN", "NVDA"}


def tick(symbol: str, price: float = 553.82, n: int = 0) -> dict[str, Any]:
    """A tick as charts publishes it (docs/charts.md)."""
    return {
        "type": "tick",
        "symbol": symbol,
        "id": f"replay:1:{symbol}:2013-01-02T05:00:00Z:{n}",
        "time": "2013-01-02T05:00:00Z",
        "price": price,
        "size": 1250.5,
        "derived": True,
        "replay": {"pass": 1, "bar_seconds": 1.0},
    }


def bar(symbol: str, interval: str) -> dict[str, Any]:
    return {
        "type": "bar",
        "symbol": symbol,
        "interval": interval,
        "id": f"replay:1:{symbol}:{interval}:2013-01-02T05:00:00Z",
        "time": "2013-01-02T05:00:00Z",
        "open": 553.82,
        "high": 555.0,
        "low": 541.63,
        "close": 549.03,
        "volume": 20018500.0,
        "closed": True,
        "replay": None,
    }


class Market:
    """charts' side: what it knows (ListSymbols) and what it publishes."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def channel(self, symbol: str) -> str:
        return f"{self.prefix}symbol:{symbol}"

    async def publish(self, frame: dict[str, Any]) -> str:
        """Publishes `frame` on its symbol's channel; the exact text sent."""
        text = json.dumps(frame, separators=(",", ":"))
        await self.redis.publish(self.channel(frame["symbol"]), text)
        return text

    async def subscribers(self, symbol: str) -> int:
        [(_, count)] = await self.redis.pubsub_numsub(self.channel(symbol))
        return int(count)

    @staticmethod
    def list_symbols(request: charts_pb2.ListSymbolsRequest) -> charts_pb2.ListSymbolsResponse:
        # As charts: the exact ticker first, then the tickers it is a prefix of.
        found = sorted(s for s in KNOWN if s.startswith(request.q.upper()))
        found.sort(key=lambda s: s != request.q.upper())
        return charts_pb2.ListSymbolsResponse(
            instruments=[charts_pb2.Instrument(symbol=s, name=s) for s in found][: request.limit]
        )


@pytest.fixture
def market(fake_charts: Any, redis: Redis, redis_prefix: str) -> Market:
    fake_charts.answers["ListSymbols"] = Market.list_symbols
    return Market(redis, redis_prefix + "market:stream:")


@pytest.fixture
async def gw(serve_gateway: Any, fake_charts: Any, market: Market) -> Any:
    return await serve_gateway(
        charts_grpc_target=fake_charts.address, market_stream_prefix=market.prefix
    )


def url(gateway: Any) -> str:
    return f"ws://127.0.0.1:{gateway.port}/api/market/stream"


async def open_ws(
    gateway: Any, token: str | None = None, *, ready: bool = True, **kwargs: Any
) -> ClientConnection:
    ws = await connect(
        url(gateway),
        additional_headers={"Authorization": f"Bearer {token}"} if token else {},
        compression=None,
        open_timeout=TIMEOUT,
        **kwargs,
    )
    if ready:
        assert (await recv(ws))["type"] == "ready"
    return ws


async def recv_raw(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    raw = await recv_raw(ws)
    frame: dict[str, Any] = msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)
    return frame


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def subscribe(
    ws: ClientConnection, symbols: list[str], intervals: list[str] | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribe", "symbols": symbols}
    if intervals is not None:
        frame["intervals"] = intervals
    await ws.send(json.dumps(frame))
    answer = await recv(ws)
    assert answer["type"] == "subscribed", answer
    return answer


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed:
        pass
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- the handshake ---------------------------------------------------------------------------------
async def test_ready_states_the_plans_symbol_limit(gw: Any, token: Callable[..., str]) -> None:
    for plan, limit in [("free", 5), ("premium", 50), ("admin", 200), ("mystery", 5)]:
        async with await open_ws(gw, token(sub="u-ada", plan=plan), ready=False) as ws:
            ready = await recv(ws)
            assert ready["type"] == "ready"
            assert ready["user_id"] == "u-ada"
            assert ready["max_symbols"] == limit, plan
            assert ready["intervals"] == ["1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M"]
            assert ready["format"] == "json"


async def test_the_handshake_is_refused_as_chats_is(
    gw: Any, serve_gateway: Any, fake_chat: Any, token: Callable[..., str]
) -> None:
    """No token: the same error frame and close code on both sockets; so for a token in the URL,
    a foreign origin and an expired token."""
    chat = await serve_gateway(chat_grpc_target=fake_chat.address, chat_ws_auth_timeout_s=0.3)
    market = await serve_gateway(
        charts_grpc_target=gw.resources.settings.charts_grpc_target,
        market_stream_auth_timeout_s=0.3,
    )
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("", {}, 4001, "auth_timeout"),
        ("?token=x", {}, 4001, "token_in_url"),
        ("", {"origin": "https://evil.example"}, 4003, "forbidden_origin"),
        ("", {"additional_headers": {"Authorization": f"Bearer {token(exp=1)}"}}, 4001, ""),
    ]
    for suffix, kwargs, code, error in cases:
        got = []
        for socket_url in (chat.ws_url, url(market)):
            async with await connect(
                socket_url + suffix, compression=None, open_timeout=TIMEOUT, **kwargs
            ) as ws:
                frame = await recv(ws)
                assert frame["type"] == "error"
                got.append((frame["code"], *await closed_with(ws)))
        assert got[0] == got[1], got
        assert got[0][1] == code
        if error:
            assert got[0][0] == error


async def test_a_first_auth_frame_authenticates(gw: Any, token: Callable[..., str]) -> None:
    async with await open_ws(gw, ready=False) as ws:
        await send(ws, type="auth", token=token(sub="u-web", plan="premium"))
        ready = await recv(ws)
        assert (ready["type"], ready["user_id"], ready["max_symbols"]) == ("ready", "u-web", 50)


async def test_without_charts_the_socket_closes_1013(
    serve_gateway: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway()
    async with await open_ws(gw, token(), ready=False) as ws:
        assert (await recv(ws))["code"] == "unavailable"
        code, _ = await closed_with(ws)
    assert code == 1013


# -- delivery --------------------------------------------------------------------------------------
async def test_ticks_go_to_every_follower_of_the_symbol_bars_only_to_their_interval(
    gw: Any, market: Market, token: Callable[..., str]
) -> None:
    minute = await open_ws(gw, token())
    daily = await open_ws(gw, token())
    fx = await open_ws(gw, token())
    await subscribe(minute, ["AAPL"], ["1m"])
    await subscribe(daily, ["AAPL", "EURUSD"], ["1d"])
    await subscribe(fx, ["EURUSD"])
    delivered = sample("aether_gateway_market_frames_out_total", type="tick")

    aapl_tick = await market.publish(tick("AAPL"))
    assert await recv_raw(minute) == aapl_tick  # forwarded unchanged
    assert await recv_raw(daily) == aapl_tick

    bar_1d = await market.publish(bar("AAPL", "1d"))
    bar_1m = await market.publish(bar("AAPL", "1m"))
    await market.publish(bar("AAPL", "1h"))  # nobody follows it
    fx_tick = await market.publish(tick("EURUSD", 1.3))
    assert await recv_raw(daily) == bar_1d
    assert await recv_raw(daily) == fx_tick  # not the 1m nor the 1h bar
    assert await recv_raw(minute) == bar_1m  # not the 1d bar
    assert await recv_raw(fx) == fx_tick  # none of AAPL's frames
    assert sample("aether_gateway_market_frames_out_total", type="tick") - delivered == 4

    # A second subscribe adds intervals to what a symbol already has; the ack lists it all.
    again = await subscribe(minute, ["aapl"], ["1d", "1m"])
    assert again["symbols"] == ["AAPL"]
    assert again["subscriptions"] == {"AAPL": ["1m", "1d"]}
    text = await market.publish(bar("AAPL", "1d"))
    assert await recv_raw(minute) == text
    for ws in (minute, daily, fx):
        await ws.close()


async def test_msgpack_clients_get_the_same_frames(
    gw: Any, market: Market, token: Callable[..., str]
) -> None:
    ws = await open_ws(gw, token(), subprotocols=["aether.msgpack"])
    await subscribe(ws, ["MSFT"])
    frame = tick("MSFT")
    await market.publish(frame)
    raw = await recv_raw(ws)
    assert isinstance(raw, bytes)
    assert msgpack.unpackb(raw) == frame
    await ws.close()


async def test_unsubscribe_stops_delivery_and_frees_the_channel(
    gw: Any, market: Market, token: Callable[..., str]
) -> None:
    ws = await open_ws(gw, token())
    subscribed = await subscribe(ws, ["AAPL", "MSFT"], ["1d", "1m"])
    assert subscribed["subscriptions"] == {"AAPL": ["1m", "1d"], "MSFT": ["1m", "1d"]}
    assert await market.subscribers("AAPL") == 1

    # Only an interval: its bars stop, the ticks and the other interval go on.
    await send(ws, type="unsubscribe", symbols=["AAPL"], intervals=["1d"], id="u1")
    answer = await recv(ws)
    assert answer == {
        "type": "unsubscribed",
        "id": "u1",
        "symbols": ["AAPL"],
        "intervals": ["1d"],
        "subscriptions": {"AAPL": ["1m"], "MSFT": ["1m", "1d"]},
        "max_symbols": 5,
    }
    await market.publish(bar("AAPL", "1d"))
    text = await market.publish(bar("AAPL", "1m"))
    assert await recv_raw(ws) == text

    # The symbol altogether.
    await send(ws, type="unsubscribe", symbols=["AAPL"])
    answer = await recv(ws)
    assert answer["subscriptions"] == {"MSFT": ["1m", "1d"]}
    await market.publish(tick("AAPL"))
    text = await market.publish(tick("MSFT"))
    assert await recv_raw(ws) == text
    assert await market.subscribers("AAPL") == 0  # the last follower gone: channel given up

    await send(ws, type="unsubscribe", symbols=["AAPL"], id="u2")
    error = await recv(ws)
    assert (error["code"], error["symbols"], error["id"]) == ("not_subscribed", ["AAPL"], "u2")
    await ws.close()
    for _ in range(100):
        if await market.subscribers("MSFT") == 0:
            break
        await asyncio.sleep(0.05)
    assert await market.subscribers("MSFT") == 0  # the connection's end frees its channels


async def test_one_channel_per_symbol_whatever_the_followers(
    gw: Any, market: Market, token: Callable[..., str], redis: Redis
) -> None:
    clients = [await open_ws(gw, token()) for _ in range(3)]
    for ws in clients:
        await subscribe(ws, ["AAPL", "MSFT"])
    assert [await market.subscribers(s) for s in ("AAPL", "MSFT")] == [1, 1]
    name = gw.resources.market.hub.fanout.client_name
    assert name.startswith("aether-gateway-market-fanout:")
    ours = [c for c in await redis.client_list(_type="pubsub") if c.get("name") == name]
    assert [int(c["sub"]) for c in ours] == [2]
    await clients[0].close()
    await clients[1].send(json.dumps({"type": "unsubscribe", "symbols": ["AAPL"]}))
    await recv(clients[1])
    assert await market.subscribers("AAPL") == 1  # clients[2] still follows it
    for ws in clients[1:]:
        await ws.close()


# -- what a subscribe may ask ----------------------------------------------------------------------
async def test_the_free_plan_follows_at_most_5_symbols(gw: Any, token: Callable[..., str]) -> None:
    ws = await open_ws(gw, token(plan="free"))
    await send(
        ws, type="subscribe", symbols=["AAPL", "MSFT", "EURUSD", "BRK.B", "GOOG", "IBM"], id="s1"
    )
    error = await recv(ws)
    assert error["type"] == "error"
    assert (error["code"], error["limit"], error["symbols"], error["id"]) == (
        "too_many_symbols",
        5,
        ["IBM"],
        "s1",
    )
    assert "5" in error["detail"]
    subscribed = await recv(ws)
    assert subscribed["symbols"] == ["AAPL", "MSFT", "EURUSD", "BRK.B", "GOOG"]
    # Full: a new symbol is refused, one already followed is not.
    await send(ws, type="subscribe", symbols=["NVDA"])
    assert (await recv(ws))["code"] == "too_many_symbols"
    await subscribe(ws, ["AAPL"], ["1d"])
    # Room again after an unsubscribe.
    await send(ws, type="unsubscribe", symbols=["GOOG"])
    await recv(ws)
    assert (await subscribe(ws, ["NVDA"]))["symbols"] == ["NVDA"]
    await ws.close()


async def test_premium_and_configured_limits(
    serve_gateway: Any, fake_charts: Any, market: Market, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(
        charts_grpc_target=fake_charts.address,
        market_stream_prefix=market.prefix,
        market_stream_symbols_premium=7,
    )
    ws = await open_ws(gw, token(plan="premium"))
    answer = await subscribe(ws, sorted(KNOWN - {"NVDA"}))
    assert len(answer["symbols"]) == 7
    assert answer["max_symbols"] == 7
    await send(ws, type="subscribe", symbols=["NVDA"])
    error = await recv(ws)
    assert (error["code"], error["limit"]) == ("too_many_symbols", 7)
    await ws.close()


async def test_unknown_symbols_bad_symbols_and_bad_intervals_are_error_frames(
    gw: Any, fake_charts: Any, token: Callable[..., str]
) -> None:
    ws = await open_ws(gw, token())
    await send(ws, type="subscribe", symbols=["AAPL", "NOPE", "AAP"], id="s1")
    error = await recv(ws)
    assert (error["code"], error["id"]) == ("unknown_symbol", "s1")
    assert error["symbols"] == ["NOPE", "AAP"]
    assert (await recv(ws))["symbols"] == ["AAPL"]  # the others still subscribed

    await send(ws, type="subscribe", symbols=["$AAPL", "a" * 33, "msft"])
    error = await recv(ws)
    assert (error["code"], error["symbols"]) == ("invalid_symbol", ["$AAPL", "a" * 33])
    assert (await recv(ws))["symbols"] == ["MSFT"]  # case-folded

    for intervals in (["2m"], ["1d", "1D"], ["1min"]):
        await send(ws, type="subscribe", symbols=["EURUSD"], intervals=intervals, id="s2")
        error = await recv(ws)
        assert (error["code"], error["op"], error["id"]) == ("invalid_interval", "subscribe", "s2")
    await send(ws, type="unsubscribe", symbols=["AAPL"], intervals=["5s"])
    assert (await recv(ws))["code"] == "invalid_interval"

    # Nothing of the refused frames was subscribed; the connection is still open.
    await send(ws, type="ping", id="p")
    assert await recv(ws) == {"type": "pong", "id": "p"}
    assert gw.resources.market.hub.streams.keys() == {"AAPL", "MSFT"}
    # charts was asked once per symbol (AAPL again: from the cache).
    await subscribe(ws, ["AAPL"])
    await ws.close()
    other = await open_ws(gw, token())
    await subscribe(other, ["AAPL"])
    asked = [call.request.q for call in fake_charts.calls_to("ListSymbols")]
    assert sorted(asked) == ["AAP", "AAPL", "MSFT", "NOPE"]
    await other.close()


async def test_charts_away_is_an_unavailable_error_frame(
    gw: Any, fake_charts: Any, token: Callable[..., str]
) -> None:
    fake_charts.answers["ListSymbols"] = errors.Unavailable("charts is down")
    ws = await open_ws(gw, token())
    await send(ws, type="subscribe", symbols=["AAPL"], id="s1")
    error = await recv(ws)
    assert (error["type"], error["code"], error["id"]) == ("error", "unavailable", "s1")
    # Not cached: once charts is back the same subscribe works.
    fake_charts.answers["ListSymbols"] = Market.list_symbols
    assert (await subscribe(ws, ["AAPL"]))["symbols"] == ["AAPL"]
    await ws.close()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_frame"),
        ("[1, 2]", "invalid_frame"),
        (json.dumps({"type": "subscribe"}), "invalid_frame"),
        (json.dumps({"type": "subscribe", "symbols": []}), "invalid_frame"),
        (json.dumps({"type": "subscribe", "symbols": ["AAPL"], "extra": 1}), "invalid_frame"),
        (json.dumps({"type": "send", "room_id": "r"}), "unknown_type"),
        ("x" * 20_000, "too_large"),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_connection_goes_on(
    gw: Any, token: Callable[..., str], raw: str, code: str
) -> None:
    ws = await open_ws(gw, token())
    await ws.send(raw)
    error = await recv(ws)
    assert (error["type"], error["code"]) == ("error", code)
    await send(ws, type="ping")
    assert await recv(ws) == {"type": "pong"}
    await ws.close()


async def test_client_frames_are_rate_limited_per_connection(
    serve_gateway: Any, fake_charts: Any, market: Market, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(
        charts_grpc_target=fake_charts.address,
        market_stream_prefix=market.prefix,
        market_stream_rate_free=2,
    )
    ws = await open_ws(gw, token())
    for _ in range(2):
        await send(ws, type="ping")
        assert (await recv(ws))["type"] == "pong"
    await send(ws, type="ping", id="p3")
    error = await recv(ws)
    assert (error["code"], error["id"]) == ("rate_limited", "p3")
    assert error["retry_after"] > 0
    await ws.close()


# -- liveness and outages --------------------------------------------------------------------------
async def test_heartbeat_then_idle_close(
    serve_gateway: Any, fake_charts: Any, market: Market, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(
        charts_grpc_target=fake_charts.address,
        market_stream_prefix=market.prefix,
        market_stream_heartbeat_s=0.2,
        market_stream_idle_timeout_s=0.6,
    )
    ws = await open_ws(gw, token())
    assert await recv(ws) == {"type": "ping"}
    code, reason = await closed_with(ws)
    assert code == 4008
    assert "idle" in reason


async def test_a_slow_client_is_closed_and_its_frames_counted_as_dropped(
    serve_gateway: Any, fake_charts: Any, market: Market, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(
        charts_grpc_target=fake_charts.address,
        market_stream_prefix=market.prefix,
        market_stream_queue_frames=16,
    )
    fast = await open_ws(gw, token(sub="u-fast"))
    slow = await open_ws(gw, token(sub="u-slow"), max_queue=1)
    for ws in (fast, slow):
        await subscribe(ws, ["AAPL"])
    dropped = sample("aether_gateway_market_frames_dropped_total", type="tick")
    slow.transport.pause_reading()  # never reads: the kernel buffers fill, then our queue
    total = 200
    pad = "x" * 60_000

    async def publish() -> None:
        for n in range(total):
            await market.publish(tick("AAPL", n=n) | {"pad": pad})

    async def read_fast() -> list[str]:
        return [(await recv(fast))["id"] for _ in range(total)]

    _, got = await asyncio.gather(publish(), read_fast())
    assert got == [tick("AAPL", n=n)["id"] for n in range(total)]
    hub = gw.resources.market.hub
    for _ in range(100):
        if len(hub.connections) == 1:
            break
        await asyncio.sleep(0.05)
    assert [c.user_id for c in hub.connections] == ["u-fast"]
    assert sample("aether_gateway_market_frames_dropped_total", type="tick") > dropped
    slow.transport.resume_reading()
    code, reason = await closed_with(slow)
    assert code == 4009
    assert "too slow" in reason
    await fast.close()


async def test_after_losing_redis_clients_get_a_gap_frame_then_live_frames(
    gw: Any, market: Market, token: Callable[..., str], redis: Redis
) -> None:
    ws = await open_ws(gw, token())
    await subscribe(ws, ["MSFT", "AAPL"])
    name = gw.resources.market.hub.fanout.client_name
    for client in await redis.client_list(_type="pubsub"):
        if client.get("name") == name:
            await redis.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "ID", client["id"]
            )
    gap = await recv(ws)
    assert (gap["type"], gap["symbols"]) == ("gap", ["AAPL", "MSFT"])
    text = await market.publish(tick("AAPL"))
    assert await recv_raw(ws) == text
    await ws.close()


async def test_a_connection_ending_while_redis_is_away_leaves_no_channel_wanted() -> None:
    """The hub alone, its Redis unreachable: a subscribe waits for a confirmation that does not
    come; the connection ends meanwhile (its reader cancelled), and nothing stays wanted."""
    hub = MarketHub(f"redis://127.0.0.1:{free_port()}", "test:")  # nothing listens there
    hub.start()

    async def send(_: dict[str, Any]) -> None:
        return None

    token = AccessToken("u-1", "j", 0, 2**40, "s", "free", frozenset(), frozenset(), True, "raw")
    conn = MarketConnection(send, token, binary=False, max_queue=8, rate=None, max_symbols=5)
    hub.add(conn)
    follow = asyncio.create_task(hub.follow(conn, ["AAPL", "MSFT"], ["1d"]))
    await asyncio.sleep(0.1)
    assert hub.streams.keys() == {"AAPL", "MSFT"}
    assert hub.fanout.channels == 2
    follow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follow
    hub.remove(conn)
    assert hub.streams == {}
    assert hub.fanout.channels == 0
    await hub.close()
