"""`WS /api/market/stream`: live ticks and bars on the shared socket lifecycle (ws/session.py).
Protocol: docs/charts.md, "Live market stream".

What is the market socket's own: its ready frame (with the plan's symbol limit), the client
frames (FrameHandler: subscribe and unsubscribe to symbols and bar intervals, checked against
charts' rule, the plan's limit and charts' instruments). The hub (hub.py) delivers the frames
and keeps the connections alive (heartbeats, idle and expiry closes), as chat's hub does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from starlette.types import Receive, Scope, Send

from aether_common.access_tokens import AccessToken
from aether_common.errors import AetherError
from aether_gateway.access_middleware import client_ip
from aether_gateway.chat.frames import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    error_from,
    over_rate,
    refuse,
)
from aether_gateway.market import frames as f
from aether_gateway.market.frames import BadFrame, error_frame
from aether_gateway.market.hub import MarketConnection, MarketHub, limit_error
from aether_gateway.market.metrics import CLOSES, FRAMES_IN, QUEUE_OVERFLOWS
from aether_gateway.market.runtime import MarketRuntime
from aether_gateway.market.symbols import SymbolDirectory
from aether_gateway.resources import GatewayResources
from aether_gateway.ws.close_codes import CLOSE_TRY_LATER, CLOSE_UNAUTHENTICATED
from aether_gateway.ws.connection import Connection, SlidingLog
from aether_gateway.ws.frames import PONG, AuthIn, Frame, PingIn
from aether_gateway.ws.handshake import Refused
from aether_gateway.ws.session import Session

_IN = {kind: FRAMES_IN.labels(kind) for kind in (*f.CLIENT_TYPES, "invalid")}


class MarketSession(Session):
    kind = "market"
    closes = CLOSES

    def __init__(
        self, resources: GatewayResources, scope: Scope, receive: Receive, send: Send
    ) -> None:
        super().__init__(resources, scope, receive, send)
        self.runtime: MarketRuntime = resources.market
        self.handler: FrameHandler | None = None

    @property
    def auth_timeout_s(self) -> float:
        return self.settings.market_stream_auth_timeout_s

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        if MSGPACK_SUBPROTOCOL in offered:
            self.binary = True
            return MSGPACK_SUBPROTOCOL
        if JSON_SUBPROTOCOL in offered:
            return JSON_SUBPROTOCOL
        return None

    def check_available(self) -> None:
        if self.runtime.hub is None:
            raise Refused(
                CLOSE_TRY_LATER,
                "the market stream needs charts, which is not configured on this gateway",
                "unavailable",
            )

    def parse(self, text: str | None, data: bytes | None) -> Any:
        return f.parse(f.decode(text, data, self.settings.market_stream_max_frame_bytes))

    def auth_frame_read(self) -> None:
        _IN["auth"].inc()

    def refusal_frame(self, refused: Refused) -> Frame:
        return error_frame(refused.error or "", refused.reason)

    def open(self, token: AccessToken) -> Connection:
        runtime = self.runtime
        hub, directory = runtime.hub, runtime.directory
        # check_available refused the socket otherwise
        assert hub is not None
        assert directory is not None
        settings = self.settings
        limit = runtime.ws_limit(token)
        conn = MarketConnection(
            self.send,
            token,
            binary=self.binary,
            max_queue=settings.market_stream_queue_frames,
            rate=SlidingLog(limit, settings.market_stream_rate_window_s) if limit else None,
            max_symbols=runtime.max_symbols(token),
            client_ip=client_ip(self.scope),
            overflows=QUEUE_OVERFLOWS,
        )
        hub.add(conn)
        conn.push(
            Frame.of(
                {
                    "type": "ready",
                    "connection_id": uuid.uuid4().hex,
                    "user_id": conn.user_id,
                    "format": "msgpack" if self.binary else "json",
                    "plan": token.plan,
                    "max_symbols": conn.max_symbols,
                    "intervals": list(f.INTERVALS),
                    "heartbeat_s": settings.market_stream_heartbeat_s,
                    "idle_timeout_s": settings.market_stream_idle_timeout_s,
                    "max_frame_bytes": settings.market_stream_max_frame_bytes,
                    "rate_limit": {
                        "limit": limit,
                        "window_s": settings.market_stream_rate_window_s,
                    },
                    "token_expires_at": token.expires_at,
                }
            )
        )
        self.handler = FrameHandler(hub, directory, self.resources, conn)
        return conn

    async def handle(self, conn: Connection, text: str | None, data: bytes | None) -> None:
        assert self.handler is not None
        await self.handler.handle(text, data)

    async def ended(self, conn: Connection) -> None:
        if self.handler is not None and self.runtime.hub is not None:
            self.runtime.hub.remove(self.handler.conn)


class FrameHandler:
    """Client frames of one connection, one at a time, in the order they came."""

    def __init__(
        self,
        hub: MarketHub,
        directory: SymbolDirectory,
        resources: GatewayResources,
        conn: MarketConnection,
    ) -> None:
        self.hub = hub
        self.directory = directory
        self.resources = resources
        self.conn = conn
        self.max_bytes = resources.settings.market_stream_max_frame_bytes

    async def handle(self, text: str | None, data: bytes | None) -> None:
        conn = self.conn
        obj: dict[str, Any] = {}
        try:
            obj = f.decode(text, data, self.max_bytes)
            frame = f.parse(obj)
        except BadFrame as exc:
            _IN["invalid"].inc()
            refuse(conn, obj, exc)
            return
        kind = frame.type
        _IN[kind].inc()
        if kind == "pong":
            return
        if over_rate(conn, kind, frame.id):
            return
        try:
            await getattr(self, f"on_{kind}")(frame)
        except BadFrame as exc:
            conn.push(error_frame(exc.code, exc.detail, op=exc.op, request_id=frame.id))
        except AetherError as exc:
            conn.push(error_from(exc, op=kind, request_id=frame.id))

    def _reply(self, obj: dict[str, Any], frame: Any) -> None:
        if frame.id is not None:
            obj["id"] = frame.id
        self.conn.push(Frame.of(obj))

    def _symbols(self, raw: list[str], op: str, request_id: str | None) -> list[str]:
        """The valid symbols, upper-cased, deduplicated, in order; an `invalid_symbol` error
        frame for the others."""
        symbols: dict[str, None] = {}
        invalid: list[str] = []
        for item in raw:
            symbol = f.fold_symbol(item)
            if symbol is None:
                invalid.append(item[:64])
            else:
                symbols[symbol] = None
        if invalid:
            self.conn.push(
                error_frame(
                    "invalid_symbol",
                    "a symbol is 1-32 characters: letters, digits, '.' and '-', starting with a"
                    " letter or digit",
                    op=op,
                    request_id=request_id,
                    symbols=invalid,
                )
            )
        return list(symbols)

    async def on_ping(self, frame: PingIn) -> None:
        if frame.id is None:
            self.conn.push(PONG)
        else:
            self._reply({"type": "pong"}, frame)

    async def on_auth(self, frame: AuthIn) -> None:
        """A fresh token before the current one expires (same user only). The symbol limit
        stays the one of the connection's first token: a new plan applies on reconnect."""
        try:
            token = await self.resources.verifier.verify(frame.token)
        except AetherError as exc:
            self.conn.push(error_from(exc, op="auth", request_id=frame.id))
            return
        if token.subject != self.conn.user_id:
            self.conn.close(CLOSE_UNAUTHENTICATED, "auth frame for another user")
            return
        reason = await self.resources.revocations.revoked_reason(
            token.jti, token.session_id, token.subject, token.issued_at
        )
        if reason is not None:
            self.conn.push(error_frame("invalid_token", "access token has been revoked", op="auth"))
            return
        self.conn.token = token
        self._reply({"type": "ack", "op": "auth", "token_expires_at": token.expires_at}, frame)

    async def on_subscribe(self, frame: f.SubscribeIn) -> None:
        conn = self.conn
        intervals = f.check_intervals(frame.intervals, "subscribe")
        symbols = self._symbols(frame.symbols, "subscribe", frame.id)
        if not symbols:
            return
        new = [s for s in symbols if s not in conn.subs]
        space = max(conn.max_symbols - len(conn.subs), 0)
        if len(new) > space:
            conn.push(limit_error(conn, new[space:], frame.id))
            refused = set(new[space:])
            new = new[:space]
            symbols = [s for s in symbols if s not in refused]
        if new:
            unknown = await self.directory.unknown(new, conn.token.raw)
            if unknown:
                conn.push(
                    error_frame(
                        "unknown_symbol",
                        f"charts has no instrument {unknown[0]}"
                        + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
                        op="subscribe",
                        request_id=frame.id,
                        symbols=unknown,
                    )
                )
                gone = set(unknown)
                symbols = [s for s in symbols if s not in gone]
        if not symbols or conn.closing:
            return
        live = await self.hub.follow(conn, symbols, intervals)
        if conn.closing:
            return
        self._reply(
            {
                "type": "subscribed",
                "symbols": symbols,
                "intervals": list(intervals),
                "subscriptions": conn.subscriptions(),
                "max_symbols": conn.max_symbols,
            },
            frame,
        )
        if not live:
            conn.push(
                error_frame(
                    "unavailable",
                    "the market stream is not reachable now: frames start when it is back",
                    op="subscribe",
                    request_id=frame.id,
                    symbols=symbols,
                )
            )

    async def on_unsubscribe(self, frame: f.UnsubscribeIn) -> None:
        conn = self.conn
        intervals = (
            None if frame.intervals is None else f.check_intervals(frame.intervals, "unsubscribe")
        )
        symbols = self._symbols(frame.symbols, "unsubscribe", frame.id)
        absent = [s for s in symbols if s not in conn.subs]
        if absent:
            conn.push(
                error_frame(
                    "not_subscribed",
                    "this connection does not follow "
                    + (absent[0] if len(absent) == 1 else f"{len(absent)} of these symbols"),
                    op="unsubscribe",
                    request_id=frame.id,
                    symbols=absent,
                )
            )
            symbols = [s for s in symbols if s in conn.subs]
        if not symbols:
            return
        self.hub.unfollow(conn, symbols, intervals)
        self._reply(
            {
                "type": "unsubscribed",
                "symbols": symbols,
                "intervals": None if intervals is None else list(intervals),
                "subscriptions": conn.subscriptions(),
                "max_symbols": conn.max_symbols,
            },
            frame,
        )

    async def on_pong(self, frame: f.PongIn) -> None:  # pragma: no cover - handled before
        return
