"""`WS /api/chat/connect`: chat's socket on the shared lifecycle (ws/session.py). Protocol:
docs/chat.md, "The client WebSocket protocol".

What is chat's own: JSON or MessagePack frames (the subprotocol), the ready frame, and the client
frames, handled one at a time in the order they came (FrameHandler). The hub (hub.py) delivers
the rooms' frames and keeps the connections alive (heartbeats, idle and expiry closes).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from starlette.types import Receive, Scope, Send

from aether.chat.v1 import chat_pb2
from aether_common.access_tokens import AccessToken
from aether_common.errors import AetherError
from aether_gateway.access_middleware import client_ip
from aether_gateway.chat import frames as f
from aether_gateway.chat.frames import BadFrame, error_frame, error_from, over_rate, refuse
from aether_gateway.chat.hub import ChatConnection, ChatHub
from aether_gateway.chat.metrics import CLOSES, FRAMES_IN, QUEUE_OVERFLOWS
from aether_gateway.chat.runtime import ChatRuntime
from aether_gateway.resources import GatewayResources
from aether_gateway.ws.close_codes import CLOSE_TRY_LATER, CLOSE_UNAUTHENTICATED
from aether_gateway.ws.connection import Connection, SlidingLog
from aether_gateway.ws.frames import PONG, AuthIn, Frame, PingIn
from aether_gateway.ws.handshake import Refused
from aether_gateway.ws.session import Session

_IN = {kind: FRAMES_IN.labels(kind) for kind in (*f.CLIENT_TYPES, "invalid")}


class ChatSession(Session):
    kind = "chat"
    closes = CLOSES

    def __init__(
        self, resources: GatewayResources, scope: Scope, receive: Receive, send: Send
    ) -> None:
        super().__init__(resources, scope, receive, send)
        self.runtime: ChatRuntime = resources.chat
        self.handler: FrameHandler | None = None

    @property
    def auth_timeout_s(self) -> float:
        return self.settings.chat_ws_auth_timeout_s

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        if f.MSGPACK_SUBPROTOCOL in offered:
            self.binary = True
            return f.MSGPACK_SUBPROTOCOL
        if f.JSON_SUBPROTOCOL in offered:
            return f.JSON_SUBPROTOCOL
        return None

    def check_available(self) -> None:
        if self.runtime.hub is None:
            raise Refused(CLOSE_TRY_LATER, "chat is not configured on this gateway", "unavailable")

    def parse(self, text: str | None, data: bytes | None) -> Any:
        return f.parse(f.decode(text, data, self.settings.chat_ws_max_frame_bytes))

    def auth_frame_read(self) -> None:
        _IN["auth"].inc()

    def refusal_frame(self, refused: Refused) -> Frame:
        return error_frame(refused.error or "", refused.reason)

    def open(self, token: AccessToken) -> Connection:
        hub = self._hub()
        settings = self.settings
        limit = self.runtime.ws_limit(token)
        conn = ChatConnection(
            self.send,
            token,
            binary=self.binary,
            max_queue=settings.chat_ws_queue_frames,
            rate=SlidingLog(limit, settings.chat_ws_rate_window_s) if limit else None,
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
                    "heartbeat_s": settings.chat_ws_heartbeat_s,
                    "idle_timeout_s": settings.chat_ws_idle_timeout_s,
                    "max_frame_bytes": settings.chat_ws_max_frame_bytes,
                    "max_rooms": settings.chat_ws_max_rooms,
                    "rate_limit": {"limit": limit, "window_s": settings.chat_ws_rate_window_s},
                    "token_expires_at": token.expires_at,
                }
            )
        )
        self.handler = FrameHandler(self.runtime, self.resources, conn)
        return conn

    async def handle(self, conn: Connection, text: str | None, data: bytes | None) -> None:
        assert self.handler is not None
        await self.handler.handle(text, data)

    async def ended(self, conn: Connection) -> None:
        if self.handler is not None:
            self._hub().remove(self.handler.conn)

    def _hub(self) -> ChatHub:
        hub = self.runtime.hub
        assert hub is not None  # check_available refused the socket otherwise
        return hub


class FrameHandler:
    """Client frames of one connection, one at a time, in the order they came."""

    def __init__(
        self, runtime: ChatRuntime, resources: GatewayResources, conn: ChatConnection
    ) -> None:
        assert runtime.hub is not None
        assert runtime.chat is not None
        self.hub = runtime.hub
        self.chat = runtime.chat
        self.resources = resources
        self.conn = conn
        self.max_bytes = resources.settings.chat_ws_max_frame_bytes

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
        context = {
            "client_msg_id": getattr(frame, "client_msg_id", None),
            "room_id": getattr(frame, "room_id", None),
        }
        if over_rate(conn, kind, frame.id, **context):
            return
        try:
            await getattr(self, f"on_{kind}")(frame)
        except AetherError as exc:
            conn.push(
                error_from(
                    exc,
                    op=kind,
                    request_id=frame.id,
                    room_id=getattr(frame, "room_id", None),
                    client_msg_id=getattr(frame, "client_msg_id", None),
                    seq=getattr(frame, "seq", None),
                )
            )

    def _reply(self, obj: dict[str, Any], frame: Any) -> None:
        if frame.id is not None:
            obj["id"] = frame.id
        self.conn.push(Frame.of(obj))

    async def on_ping(self, frame: PingIn) -> None:
        if frame.id is None:
            self.conn.push(PONG)
        else:
            self._reply({"type": "pong"}, frame)

    async def on_auth(self, frame: AuthIn) -> None:
        """A fresh token before the current one expires (same user only)."""
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
        await self.hub.subscribe(self.conn, frame.rooms, frame.id)

    async def on_unsubscribe(self, frame: f.UnsubscribeIn) -> None:
        self.hub.unsubscribe(self.conn, frame.room_ids, frame.id)

    async def on_send(self, frame: f.SendIn) -> None:
        request = chat_pb2.SendMessageRequest(
            room_id=frame.room_id,
            client_msg_id=frame.client_msg_id,
            content=frame.content,
            mentions=frame.mentions,
            reply_to_seq=frame.reply_to_seq,
        )
        answer = await self.chat.call(
            self.chat.stub.SendMessage, request, token=self.conn.token.raw
        )
        message = answer.message
        self._reply(
            {
                "type": "ack",
                "op": "send",
                "client_msg_id": frame.client_msg_id,
                "room_id": message.room_id or frame.room_id,
                "seq": message.seq,
                "message_id": message.message_id,
                "created": answer.created,
            },
            frame,
        )

    async def on_edit(self, frame: f.EditIn) -> None:
        request = chat_pb2.EditMessageRequest(
            room_id=frame.room_id, seq=frame.seq, content=frame.content
        )
        await self.chat.call(self.chat.stub.EditMessage, request, token=self.conn.token.raw)
        self._reply(
            {"type": "ack", "op": "edit", "room_id": frame.room_id, "seq": frame.seq}, frame
        )

    async def on_delete(self, frame: f.DeleteIn) -> None:
        request = chat_pb2.DeleteMessageRequest(room_id=frame.room_id, seq=frame.seq)
        await self.chat.call(self.chat.stub.DeleteMessage, request, token=self.conn.token.raw)
        self._reply(
            {"type": "ack", "op": "delete", "room_id": frame.room_id, "seq": frame.seq}, frame
        )

    async def on_typing(self, frame: f.TypingIn) -> None:
        request = chat_pb2.SetTypingRequest(room_id=frame.room_id, typing=frame.typing)
        await self.chat.call(self.chat.stub.SetTyping, request, token=self.conn.token.raw)

    async def on_read(self, frame: f.ReadIn) -> None:
        request = chat_pb2.MarkReadRequest(room_id=frame.room_id, seq=frame.seq)
        answer = await self.chat.call(self.chat.stub.MarkRead, request, token=self.conn.token.raw)
        self._reply(
            {
                "type": "ack",
                "op": "read",
                "room_id": frame.room_id,
                "last_read_seq": answer.last_read_seq,
                "unread_count": answer.unread_count,
            },
            frame,
        )

    async def on_pong(self, frame: f.PongIn) -> None:  # pragma: no cover - handled before
        return
