"""The gateway's local view of the market stream: which connection follows which symbol and
bar intervals, and delivery.

A connection follows a symbol (every `tick` of it) and, for that symbol, any bar intervals (the
`bar` frames of exactly those). The hub keeps, per symbol followed here, the connections that
follow it and, per interval, those that want its bars; the Redis channel of a symbol is
subscribed with its first local follower and given up with the last (fanout.py).

Frames are ephemeral: no history, no resume, no seq. A frame from Redis is parsed once (orjson:
its type, and a bar's interval) and wrapped in one `Frame` (charts' bytes, unchanged, shared by
every connection); per delivery the hub does a deque append (connection.push). Frames published
while the pub/sub connection was down are lost: once it is back, every connection gets a `gap`
frame naming its symbols, so charts can re-read what they miss from GET /api/charts/{symbol}.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

import orjson
from prometheus_client import Counter

from aether_common.access_tokens import AccessToken
from aether_common.logging import get_logger
from aether_gateway.fanout import Fanout
from aether_gateway.market.frames import INTERVALS, error_frame
from aether_gateway.market.metrics import (
    CONNECTIONS,
    DROPPED,
    FANOUT_BAD,
    FANOUT_IN,
    FANOUT_RECONNECTS,
    FRAMES_OUT,
    SYMBOLS,
)
from aether_gateway.ws.close_codes import CLOSE_RESTART
from aether_gateway.ws.connection import Connection, Send, SlidingLog
from aether_gateway.ws.frames import Frame
from aether_gateway.ws.liveness import Liveness

log = get_logger(__name__)

SUBSCRIBE_CONFIRM_TIMEOUT_S = 5.0
_OUT = {kind: FRAMES_OUT.labels(kind) for kind in ("tick", "bar")}
_DROPPED = {kind: DROPPED.labels(kind) for kind in ("tick", "bar")}


class MarketConnection(Connection):
    """A market stream client's connection (ws/connection.py) and what it follows."""

    __slots__ = ("max_symbols", "subs")

    def __init__(
        self,
        send: Send,
        token: AccessToken,
        *,
        binary: bool,
        max_queue: int,
        rate: SlidingLog | None,
        max_symbols: int,
        client_ip: str = "",
        overflows: Counter | None = None,
    ) -> None:
        super().__init__(
            send,
            token,
            binary=binary,
            max_queue=max_queue,
            rate=rate,
            client_ip=client_ip,
            overflows=overflows,
        )
        self.max_symbols = max_symbols
        # symbol -> the bar intervals followed (empty: ticks only)
        self.subs: dict[str, set[str]] = {}

    def subscriptions(self) -> dict[str, list[str]]:
        """What the connection follows, as the `subscribed` / `unsubscribed` frames list it."""
        return {
            symbol: [i for i in INTERVALS if i in intervals]
            for symbol, intervals in sorted(self.subs.items())
        }


class Stream:
    """One symbol followed on this gateway."""

    __slots__ = ("bars", "joining", "symbol", "ticks")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.ticks: set[MarketConnection] = set()  # every follower
        self.bars: dict[str, set[MarketConnection]] = {}  # interval -> its followers
        self.joining = 0  # subscribes waiting for Redis to confirm the channel

    @property
    def empty(self) -> bool:
        return not self.ticks and not self.joining


class MarketHub:
    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        heartbeat_s: float = 20.0,
        idle_timeout_s: float = 60.0,
        token_leeway_s: float = 0.0,
    ) -> None:
        self.fanout = Fanout(
            url,
            prefix + "symbol:",
            name="market",
            on_frame=self.dispatch,
            on_resync=self.resync,
            frames_in=FANOUT_IN,
            reconnects=FANOUT_RECONNECTS,
        )
        self.liveness = Liveness(idle_timeout_s, token_leeway_s, heartbeat_s)
        self.streams: dict[str, Stream] = {}
        self.connections: set[MarketConnection] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._bad_logged = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.fanout.start()
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="market-sweeper")

    async def close(self) -> None:
        for conn in list(self.connections):
            conn.close(CLOSE_RESTART, "server restarting")
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.fanout.close()

    # -- connections -----------------------------------------------------------------------------
    def add(self, conn: MarketConnection) -> None:
        self.connections.add(conn)
        CONNECTIONS.inc()

    def remove(self, conn: MarketConnection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        CONNECTIONS.dec()
        for symbol in list(conn.subs):
            self._drop(conn, symbol)

    # -- subscriptions ---------------------------------------------------------------------------
    async def follow(
        self, conn: MarketConnection, symbols: list[str], intervals: Iterable[str]
    ) -> bool:
        """`conn` follows `symbols` (new to it: checked by the caller against its limit and
        charts) with `intervals` added to each. Returns once Redis confirmed every new channel,
        so that what is acknowledged is live; False when Redis did not within the timeout (the
        channels go live as soon as it is back)."""
        wanted = set(intervals)
        new = [s for s in symbols if s not in conn.subs]
        for symbol in symbols:
            if symbol in conn.subs:
                self._add_intervals(conn, self.streams[symbol], wanted)
        if not new:
            return True
        streams = [self._stream(s) for s in new]
        for stream in streams:
            stream.joining += 1
        try:
            confirmed = await asyncio.gather(
                *(self.fanout.subscribe(s, SUBSCRIBE_CONFIRM_TIMEOUT_S) for s in new)
            )
        except BaseException:  # cancelled (the connection ended): no channel left behind
            for stream in streams:
                stream.joining -= 1
                self._release(stream)
            raise
        for stream in streams:
            stream.joining -= 1
        # No await from here on: the ack the caller queues next comes before any frame.
        for stream in streams:
            if conn.closing or conn not in self.connections:
                self._release(stream)
                continue
            conn.subs.setdefault(stream.symbol, set())
            stream.ticks.add(conn)
            self._add_intervals(conn, stream, wanted)
        return all(confirmed)

    def unfollow(
        self, conn: MarketConnection, symbols: list[str], intervals: Iterable[str] | None
    ) -> None:
        """Stop `intervals` of `symbols` (None: the symbols altogether). The caller checked that
        `conn` follows each."""
        for symbol in symbols:
            if intervals is None:
                self._drop(conn, symbol)
                continue
            stream = self.streams[symbol]
            followed = conn.subs[symbol]
            for interval in intervals:
                if interval in followed:
                    followed.discard(interval)
                    self._bar_followers_drop(stream, interval, conn)

    def _add_intervals(self, conn: MarketConnection, stream: Stream, intervals: set[str]) -> None:
        followed = conn.subs[stream.symbol]
        for interval in intervals - followed:
            followed.add(interval)
            stream.bars.setdefault(interval, set()).add(conn)

    def _stream(self, symbol: str) -> Stream:
        stream = self.streams.get(symbol)
        if stream is None:
            stream = self.streams[symbol] = Stream(symbol)
            SYMBOLS.inc()
        return stream

    def _drop(self, conn: MarketConnection, symbol: str) -> None:
        intervals = conn.subs.pop(symbol, None)
        stream = self.streams.get(symbol)
        if intervals is None or stream is None:
            return
        stream.ticks.discard(conn)
        for interval in intervals:
            self._bar_followers_drop(stream, interval, conn)
        self._release(stream)

    @staticmethod
    def _bar_followers_drop(stream: Stream, interval: str, conn: MarketConnection) -> None:
        followers = stream.bars.get(interval)
        if followers is not None:
            followers.discard(conn)
            if not followers:
                del stream.bars[interval]

    def _release(self, stream: Stream) -> None:
        """The symbol's Redis channel is given up with its last follower here."""
        if stream.empty and self.streams.get(stream.symbol) is stream:
            del self.streams[stream.symbol]
            SYMBOLS.dec()
            self.fanout.unsubscribe(stream.symbol)

    # -- fan-out: called by Fanout for every frame of a followed symbol -------------------------
    def dispatch(self, symbol: str, data: bytes) -> None:
        stream = self.streams.get(symbol)
        if stream is None:
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._bad_frame(symbol, "not JSON")
            return
        if type(obj) is not dict:
            self._bad_frame(symbol, "not an object")
            return
        kind = obj.get("type")
        followers: Iterable[MarketConnection]
        if kind == "tick":
            followers = stream.ticks
        elif kind == "bar":
            interval = obj.get("interval")
            if interval not in INTERVALS:
                self._bad_frame(symbol, "bar without a known interval")
                return
            followers = stream.bars.get(interval, ())
        else:
            self._bad_frame(symbol, "neither a tick nor a bar")
            return
        frame = Frame(kind, obj, data.decode())
        sent = dropped = 0
        for conn in followers:
            if conn.push(frame):
                sent += 1
            else:
                dropped += 1
        _OUT[kind].inc(sent)
        if dropped:
            _DROPPED[kind].inc(dropped)

    def resync(self) -> None:
        """The pub/sub connection was lost and is back (every channel confirmed again): what was
        published meanwhile is gone, so each connection is told which of its symbols may have a
        hole."""
        for conn in list(self.connections):
            if conn.subs:
                conn.push(
                    Frame.of(
                        {
                            "type": "gap",
                            "symbols": sorted(conn.subs),
                            "detail": "the market stream was interrupted: frames may be missing;"
                            " read GET /api/charts/{symbol} to fill in",
                        }
                    )
                )

    def _bad_frame(self, symbol: str, why: str) -> None:
        FANOUT_BAD.inc()
        if self._bad_logged < 20:
            self._bad_logged += 1
            log.warning("market fan-out: frame ignored", symbol=symbol, reason=why)

    # -- heartbeats, expiry ----------------------------------------------------------------------
    async def _sweep_forever(self) -> None:
        tick = self.liveness.tick_s
        while True:
            await asyncio.sleep(tick)
            try:
                self.sweep()
            except Exception:
                log.exception("market sweep failed")

    def sweep(self) -> None:
        """Idle connections and expired tokens closed, heartbeats sent (ws/liveness.py)."""
        now = time.monotonic()
        wall = time.time()
        check = self.liveness.check
        for conn in list(self.connections):
            if not conn.closing:
                check(conn, now, wall)


def limit_error(conn: MarketConnection, refused: list[str], request_id: str | None) -> Frame:
    """The error frame for symbols past the connection's limit."""
    plan = conn.token.plan
    return error_frame(
        "too_many_symbols",
        f"the {plan} plan follows at most {conn.max_symbols} symbols at once",
        op="subscribe",
        request_id=request_id,
        limit=conn.max_symbols,
        symbols=refused,
    )
