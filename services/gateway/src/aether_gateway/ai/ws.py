"""`WS /ws/ai-chat`: streamed answers over a WebSocket (protocol: docs/ai.md).

Per connection: this task (handshake, then waits for the end), a reader (client frames, in
order), a writer (chat's Connection: a bounded queue, so a client that does not read is closed
with 4009 instead of buffering without end), a watchdog (idle close, token expiry) and at most
one generation task. A cancel frame, the connection ending or the watchdog cancels the
generation task, which cancels the upstream gRPC call (ai frees the model slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from contextlib import aclosing
from typing import Any

from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from aether.ai.v1 import ai_pb2
from aether_common.access_tokens import AccessToken
from aether_common.errors import AetherError, InternalError
from aether_common.logging import get_logger
from aether_gateway.access_middleware import client_ip
from aether_gateway.ai import convert
from aether_gateway.ai import frames as f
from aether_gateway.ai.client import AiClient
from aether_gateway.ai.frames import BadFrame, error_frame, error_from
from aether_gateway.ai.metrics import WS_CLOSES, WS_CONNECTIONS
from aether_gateway.ai.stream import answer_events
from aether_gateway.chat.connection import Connection, SlidingLog
from aether_gateway.chat.frames import Frame
from aether_gateway.rate_limit import UNLIMITED_PERMISSION, RatePolicy
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
PONG = Frame.of({"type": "pong"})
# How often the watchdog looks at the connection (at most; less with a short idle timeout).
WATCHDOG_TICK_S = 1.0


class AiChatSocket:
    """The ASGI app behind the route."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        resources: GatewayResources = scope["app"].state.gateway
        await _Session(resources, scope, receive, send).run()


class _Session:
    def __init__(
        self, resources: GatewayResources, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.resources = resources
        self.settings = resources.settings
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = Headers(scope=scope)

    # -- handshake -------------------------------------------------------------------------------
    async def run(self) -> None:
        first = await self.receive()
        if first["type"] != "websocket.connect":
            return
        # Accepted first even when refusing, so that browsers see the error and close code.
        await self.send({"type": "websocket.accept"})
        try:
            check_origin(self.headers, self.settings.cors_origins)
            check_url(self.scope)
            ai = self.resources.ai
            if ai is None:
                raise Refused(
                    f.CLOSE_TRY_LATER, "ai is not configured on this gateway", "unavailable"
                )
            token = await authenticate(self.resources, self.scope, self.headers, self._auth_frame)
        except Refused as refused:
            await self._refuse(refused)
            return
        except WebSocketGone:
            return
        await self._serve(ai, token)

    async def _auth_frame(self) -> str:
        message = await first_frame(self.receive, self.settings.ai_ws_auth_timeout_s)
        try:
            frame = f.parse(
                f.decode(
                    message.get("text"), message.get("bytes"), self.settings.ai_ws_max_frame_bytes
                )
            )
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
        return frame.token

    async def _refuse(self, refused: Refused) -> None:
        status = f.CLOSE_STATUS.get(refused.code, 400)
        WS_CLOSES.labels(str(refused.code)).inc()
        with contextlib.suppress(Exception):
            if refused.error is not None:
                await self.send(error_frame(refused.error, refused.reason, status).json_send)
            await self.send(
                {"type": "websocket.close", "code": refused.code, "reason": refused.reason}
            )

    # -- the connection --------------------------------------------------------------------------
    async def _serve(self, ai: AiClient, token: AccessToken) -> None:
        settings = self.settings
        limit = _frame_limit(settings.ai_ws_limits(), token)
        conn = Connection(
            self.send,
            token,
            binary=False,
            max_queue=settings.ai_ws_queue_frames,
            rate=SlidingLog(limit, settings.ai_ws_rate_window_s) if limit else None,
            client_ip=client_ip(self.scope),
        )
        conn.push(
            Frame.of(
                {
                    "type": "ready",
                    "connection_id": uuid.uuid4().hex,
                    "user_id": conn.user_id,
                    "idle_timeout_s": settings.ai_ws_idle_timeout_s,
                    "max_frame_bytes": settings.ai_ws_max_frame_bytes,
                    "rate_limit": {"limit": limit, "window_s": settings.ai_ws_rate_window_s},
                    "token_expires_at": token.expires_at,
                }
            )
        )
        handler = FrameHandler(ai, self.resources, conn)
        WS_CONNECTIONS.inc()
        tasks = [
            asyncio.create_task(conn.write_loop(), name="ai-ws-writer"),
            asyncio.create_task(self._read_loop(conn, handler), name="ai-ws-reader"),
            asyncio.create_task(self._watchdog(conn, handler), name="ai-ws-watchdog"),
        ]
        try:
            await conn.finished
        finally:
            await handler.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            WS_CONNECTIONS.dec()
        if conn.close_code is not None:
            WS_CLOSES.labels(str(conn.close_code)).inc()
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

    async def _read_loop(self, conn: Connection, handler: FrameHandler) -> None:
        try:
            while True:
                message = await self.receive()
                if message["type"] != "websocket.receive":
                    conn.close(None, "client disconnected")
                    return
                conn.last_recv = time.monotonic()
                await handler.handle(message.get("text"), message.get("bytes"))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ai connection failed", user_id=conn.user_id)
            conn.close(f.CLOSE_SERVER_ERROR, "internal error")

    async def _watchdog(self, conn: Connection, handler: FrameHandler) -> None:
        """Closes an idle connection (nothing received, nothing generating) and one whose token
        expired (an `auth` frame renews it)."""
        idle_s = self.settings.ai_ws_idle_timeout_s
        leeway_s = self.settings.jwt_leeway_s
        tick = min(WATCHDOG_TICK_S, idle_s / 4)
        while not conn.closing:
            await asyncio.sleep(tick)
            if time.time() > conn.token.expires_at + leeway_s:
                conn.close(f.CLOSE_UNAUTHENTICATED, "access token expired")
            elif not handler.generating and time.monotonic() - conn.last_recv > idle_s:
                conn.close(f.CLOSE_IDLE, f"idle: no frame for {idle_s:g} s")


def _frame_limit(limits: dict[str, int | None], token: AccessToken) -> int | None:
    """Client frames per window for this caller's connections (None: unlimited)."""
    if UNLIMITED_PERMISSION in token.permissions:
        return None
    return RatePolicy(limits, None).limit_for(token.plan)


class FrameHandler:
    """Client frames of one connection, one at a time, in the order they came; at most one
    generation at a time."""

    def __init__(self, ai: AiClient, resources: GatewayResources, conn: Connection) -> None:
        self.ai = ai
        self.resources = resources
        self.conn = conn
        self.max_bytes = resources.settings.ai_ws_max_frame_bytes
        self.generation: asyncio.Task[None] | None = None
        self.generation_id: str | None = None  # the `id` of the chat frame being answered

    @property
    def generating(self) -> bool:
        return self.generation is not None and not self.generation.done()

    async def handle(self, text: str | None, data: bytes | None) -> None:
        conn = self.conn
        obj: dict[str, Any] = {}
        try:
            obj = f.decode(text, data, self.max_bytes)
            frame = f.parse(obj)
        except BadFrame as exc:
            conn.push(
                error_frame(exc.code, exc.detail, exc.status, request_id=f.request_id_of(obj))
            )
            return
        if frame.type == "cancel":  # never limited: stopping work must always be possible
            await self.on_cancel(frame)
            return
        if conn.rate is not None:
            retry = conn.rate.hit(time.monotonic())
            if retry:
                conn.push(
                    error_frame(
                        "rate_limited",
                        f"too many frames; retry in {retry:.1f} s",
                        429,
                        request_id=frame.id,
                        retry_after=round(retry, 3),
                    )
                )
                return
        await getattr(self, f"on_{frame.type}")(frame)

    async def on_ping(self, frame: f.PingIn) -> None:
        self.conn.push(PONG if frame.id is None else f.frame("pong", {}, frame.id))

    async def on_auth(self, frame: f.AuthIn) -> None:
        """A fresh token before the current one expires (same user only)."""
        try:
            token = await self.resources.verifier.verify(frame.token)
        except AetherError as exc:
            self.conn.push(error_from(exc, frame.id))
            return
        if token.subject != self.conn.user_id:
            self.conn.close(f.CLOSE_UNAUTHENTICATED, "auth frame for another user")
            return
        reason = await self.resources.revocations.revoked_reason(
            token.jti, token.session_id, token.subject, token.issued_at
        )
        if reason is not None:
            self.conn.push(
                error_frame(
                    "invalid_token", "access token has been revoked", 401, request_id=frame.id
                )
            )
            return
        self.conn.token = token
        self.conn.push(
            f.frame("ack", {"op": "auth", "token_expires_at": token.expires_at}, frame.id)
        )

    async def on_chat(self, frame: f.ChatFrameIn) -> None:
        if self.generating:
            self.conn.push(
                error_frame(
                    "busy",
                    "an answer is already being generated on this connection: wait for its "
                    "done (or send cancel)",
                    409,
                    request_id=frame.id,
                )
            )
            return
        request = convert.chat_request(frame)
        self.generation_id = frame.id
        self.generation = asyncio.create_task(self._generate(request, frame.id), name="ai-ws-gen")

    async def on_cancel(self, frame: f.CancelIn) -> None:
        generation = self.generation
        if generation is None or generation.done():
            self.conn.push(
                error_frame(
                    "not_generating", "nothing is being generated", 409, request_id=frame.id
                )
            )
            return
        await self.stop()
        # After the task ended, so that no chunk can follow it; it ends that answer, so it
        # carries the chat frame's id (the cancel frame's own id when that had none).
        self.conn.push(
            error_frame(
                "cancelled",
                "the answer was cancelled",
                f.CANCELLED_STATUS,
                request_id=self.generation_id or frame.id,
            )
        )

    async def stop(self) -> None:
        """Cancels the running generation (and so its upstream call) and waits for its end."""
        generation, self.generation = self.generation, None
        if generation is not None and not generation.done():
            generation.cancel()
            await asyncio.gather(generation, return_exceptions=True)

    async def _generate(self, request: ai_pb2.ChatRequest, request_id: str | None) -> None:
        conn = self.conn
        events = answer_events(self.ai, request, token=conn.token.raw, transport="ws")
        try:
            async with aclosing(events):
                async for kind, data in events:
                    conn.push(f.frame(kind, data, request_id))
        except AetherError as error:
            conn.push(error_from(error, request_id))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ai answer failed", user_id=conn.user_id)
            conn.push(error_from(InternalError("internal error"), request_id))
