"""`WS /api/chat/connect`: a plain ASGI endpoint (no Starlette WebSocket wrapper in the way of
the per-frame path). Protocol: docs/chat.md, "The client WebSocket protocol".

Per connection: this task (handshake, then waits for the end), a reader task (client frames,
handled in order) and a writer task (connection.py). Whatever a client sends, the worst it gets
is an error frame or its own connection closed: nothing here can affect another connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from aether.chat.v1 import chat_pb2
from aether_common.access_tokens import AccessToken
from aether_common.errors import AetherError
from aether_common.logging import get_logger
from aether_gateway.access_middleware import client_ip
from aether_gateway.chat import frames as f
from aether_gateway.chat.connection import Connection, SlidingLog
from aether_gateway.chat.frames import BadFrame, Frame, error_frame, error_from
from aether_gateway.chat.metrics import CLOSES, FRAMES_IN
from aether_gateway.chat.runtime import ChatRuntime
from aether_gateway.resources import GatewayResources
from aether_gateway.ws_handshake import (
    Refused,
    WebSocketGone,
    authenticate,
    check_origin,
    check_url,
    first_frame,
)

log = get_logger(__name__)

CLOSE_SEND_TIMEOUT_S = 5.0
_IN = {kind: FRAMES_IN.labels(kind) for kind in (*f.CLIENT_TYPES, "invalid")}
PONG = Frame.of({"type": "pong"})


class ChatSocket:
    """The ASGI app behind the route."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        resources: GatewayResources = scope["app"].state.gateway
        runtime: ChatRuntime = resources.chat
        session = _Session(runtime, resources, scope, receive, send)
        await session.run()


class _Session:
    def __init__(
        self,
        runtime: ChatRuntime,
        resources: GatewayResources,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self.runtime = runtime
        self.resources = resources
        self.settings = resources.settings
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = Headers(scope=scope)
        self.binary = False
        self.accepted = False
        self.conn: Connection | None = None

    # -- handshake -------------------------------------------------------------------------------
    async def run(self) -> None:
        first = await self.receive()
        if first["type"] != "websocket.connect":
            return
        offered = self.scope.get("subprotocols") or []
        subprotocol = None
        if f.MSGPACK_SUBPROTOCOL in offered:
            subprotocol, self.binary = f.MSGPACK_SUBPROTOCOL, True
        elif f.JSON_SUBPROTOCOL in offered:
            subprotocol = f.JSON_SUBPROTOCOL
        # Accepted first even when refusing, so that browsers see the close code and reason.
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol is not None:
            accept["subprotocol"] = subprotocol
        await self.send(accept)
        self.accepted = True
        try:
            check_origin(self.headers, self.settings.cors_origins)
            check_url(self.scope)
            if self.runtime.hub is None:
                raise Refused(
                    f.CLOSE_TRY_LATER, "chat is not configured on this gateway", "unavailable"
                )
            token = await authenticate(self.resources, self.scope, self.headers, self._auth_frame)
        except Refused as refused:
            await self._refuse(refused)
            return
        except WebSocketGone:
            return
        await self._serve(token)

    async def _auth_frame(self) -> str:
        message = await first_frame(self.receive, self.settings.chat_ws_auth_timeout_s)
        try:
            obj = f.decode(
                message.get("text"), message.get("bytes"), self.settings.chat_ws_max_frame_bytes
            )
            frame = f.parse(obj)
        except BadFrame as exc:
            raise Refused(
                f.CLOSE_UNAUTHENTICATED, f"expected an auth frame: {exc.detail}"[:120], exc.code
            ) from None
        if not isinstance(frame, f.AuthIn):
            raise Refused(
                f.CLOSE_UNAUTHENTICATED,
                "the first frame must be {'type':'auth','token':...}",
                "auth_required",
            )
        _IN["auth"].inc()
        return frame.token

    async def _refuse(self, refused: Refused) -> None:
        if refused.error is not None:
            frame = error_frame(refused.error, refused.reason)
            with contextlib.suppress(Exception):
                await self.send(frame.message(self.binary))
        CLOSES.labels(str(refused.code)).inc()
        with contextlib.suppress(Exception):
            await self.send(
                {"type": "websocket.close", "code": refused.code, "reason": refused.reason}
            )

    # -- the connection --------------------------------------------------------------------------
    async def _serve(self, token: AccessToken) -> None:
        hub = self.runtime.hub
        assert hub is not None
        settings = self.settings
        limit = self.runtime.ws_limit(token)
        conn = Connection(
            self.send,
            token,
            binary=self.binary,
            max_queue=settings.chat_ws_queue_frames,
            rate=SlidingLog(limit, settings.chat_ws_rate_window_s) if limit else None,
            client_ip=client_ip(self.scope),
        )
        self.conn = conn
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
        writer = asyncio.create_task(conn.write_loop(), name="chat-ws-writer")
        reader = asyncio.create_task(self._read_loop(conn), name="chat-ws-reader")
        try:
            await conn.finished
        finally:
            reader.cancel()
            writer.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            hub.remove(conn)
        if conn.close_code is not None:
            CLOSES.labels(str(conn.close_code)).inc()
            try:
                async with asyncio.timeout(CLOSE_SEND_TIMEOUT_S):
                    await self.send(
                        {
                            "type": "websocket.close",
                            "code": conn.close_code,
                            "reason": conn.close_reason,
                        }
                    )
            except Exception:  # a client that reads nothing cannot even take the close frame
                log.debug("close frame not sent", code=conn.close_code)

    async def _read_loop(self, conn: Connection) -> None:
        receive = self.receive
        handler = FrameHandler(self.runtime, self.resources, conn)
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    conn.close(None, "client disconnected")
                    return
                conn.last_recv = time.monotonic()
                await handler.handle(message.get("text"), message.get("bytes"))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("chat connection failed", user_id=conn.user_id)
            conn.close(f.CLOSE_SERVER_ERROR, "internal error")


class FrameHandler:
    """Client frames of one connection, one at a time, in the order they came."""

    def __init__(self, runtime: ChatRuntime, resources: GatewayResources, conn: Connection) -> None:
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
            request_id = obj.get("id")
            conn.push(
                error_frame(
                    exc.code,
                    exc.detail,
                    op=exc.op,
                    request_id=request_id if isinstance(request_id, str) else None,
                )
            )
            return
        kind = frame.type
        _IN[kind].inc()
        if kind == "pong":
            return
        if conn.rate is not None:
            retry = conn.rate.hit(time.monotonic())
            if retry:
                conn.push(
                    error_frame(
                        "rate_limited",
                        f"too many frames; retry in {retry:.1f} s",
                        op=kind,
                        request_id=frame.id,
                        retry_after=round(retry, 3),
                        client_msg_id=getattr(frame, "client_msg_id", None),
                        room_id=getattr(frame, "room_id", None),
                    )
                )
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

    async def on_ping(self, frame: f.PingIn) -> None:
        if frame.id is None:
            self.conn.push(PONG)
        else:
            self._reply({"type": "pong"}, frame)

    async def on_auth(self, frame: f.AuthIn) -> None:
        """A fresh token before the current one expires (same user only)."""
        try:
            token = await self.resources.verifier.verify(frame.token)
        except AetherError as exc:
            self.conn.push(error_from(exc, op="auth", request_id=frame.id))
            return
        if token.subject != self.conn.user_id:
            self.conn.close(f.CLOSE_UNAUTHENTICATED, "auth frame for another user")
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
