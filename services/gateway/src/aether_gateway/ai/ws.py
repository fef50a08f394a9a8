"""`WS /ws/ai-chat`: streamed answers over the shared WebSocket lifecycle (ws/session.py);
protocol: docs/ai.md.

What is the AI socket's own: JSON frames only, its ready frame, the client frames (FrameHandler)
and at most one generation task per connection. A cancel frame, the connection ending or the
watcher (ws/liveness.py: idle close, token expiry; a connection generating is not idle) cancels
the generation task, which cancels the upstream gRPC call (ai frees the model slot).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine
from contextlib import aclosing
from typing import Any

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
from aether_gateway.rate_limit import RatePolicy
from aether_gateway.resources import GatewayResources
from aether_gateway.ws.close_codes import CLOSE_TRY_LATER, CLOSE_UNAUTHENTICATED
from aether_gateway.ws.connection import Connection, SlidingLog, frame_limit
from aether_gateway.ws.frames import PONG, AuthIn, Frame, PingIn
from aether_gateway.ws.handshake import Refused
from aether_gateway.ws.liveness import Liveness
from aether_gateway.ws.session import Session

log = get_logger(__name__)


class AiSession(Session):
    kind = "ai"
    closes = WS_CLOSES

    def __init__(
        self, resources: GatewayResources, scope: Scope, receive: Receive, send: Send
    ) -> None:
        super().__init__(resources, scope, receive, send)
        self.handler: FrameHandler | None = None

    @property
    def auth_timeout_s(self) -> float:
        return self.settings.ai_ws_auth_timeout_s

    def check_available(self) -> None:
        if self.resources.ai is None:
            raise Refused(CLOSE_TRY_LATER, "ai is not configured on this gateway", "unavailable")

    def parse(self, text: str | None, data: bytes | None) -> Any:
        return f.parse(f.decode(text, data, self.settings.ai_ws_max_frame_bytes))

    def auth_frame_read(self) -> None:
        pass  # this socket counts no client frames

    def refusal_frame(self, refused: Refused) -> Frame:
        status = f.CLOSE_STATUS.get(refused.code, 400)
        return error_frame(refused.error or "", refused.reason, status)

    def open(self, token: AccessToken) -> Connection:
        ai = self.resources.ai
        assert ai is not None  # check_available refused the socket otherwise
        settings = self.settings
        limit = frame_limit(RatePolicy(settings.ai_ws_limits(), None), token)
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
        self.handler = FrameHandler(ai, self.resources, conn)
        WS_CONNECTIONS.inc()
        return conn

    async def handle(self, conn: Connection, text: str | None, data: bytes | None) -> None:
        assert self.handler is not None
        await self.handler.handle(text, data)

    def watchers(self, conn: Connection) -> list[Coroutine[Any, Any, None]]:
        handler = self.handler
        assert handler is not None
        liveness = Liveness(self.settings.ai_ws_idle_timeout_s, self.settings.jwt_leeway_s)
        return [liveness.watch(conn, busy=lambda: handler.generating)]

    async def ended(self, conn: Connection) -> None:
        if self.handler is not None:
            await self.handler.stop()
            WS_CONNECTIONS.dec()


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

    async def on_ping(self, frame: PingIn) -> None:
        self.conn.push(PONG if frame.id is None else f.frame("pong", {}, frame.id))

    async def on_auth(self, frame: AuthIn) -> None:
        """A fresh token before the current one expires (same user only)."""
        try:
            token = await self.resources.verifier.verify(frame.token)
        except AetherError as exc:
            self.conn.push(error_from(exc, frame.id))
            return
        if token.subject != self.conn.user_id:
            self.conn.close(CLOSE_UNAUTHENTICATED, "auth frame for another user")
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
