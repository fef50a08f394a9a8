"""One client WebSocket from connect to close, the same for every socket (plain ASGI: no
Starlette WebSocket wrapper in the way of the per-frame path).

1. Accept first, even to refuse, so that browsers see the close code and reason.
2. The handshake (handshake.py); a refusal sends the socket's error frame, then its close code.
3. `open()`: the socket makes the connection and queues its ready frame.
4. Until the connection ends: a writer task (connection.py), a reader task (client frames, in
   order, one at a time) and the socket's own watchers. Whatever a client sends, the worst it
   gets is an error frame or its own connection closed.
5. The tasks stop, `ended()` lets the socket clean up, then the close frame goes out (within
   CLOSE_SEND_TIMEOUT_S: a client that reads nothing cannot even take that).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Sequence
from typing import Any, ClassVar

from prometheus_client import Counter
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from aether_common.access_tokens import AccessToken
from aether_common.logging import get_logger
from aether_gateway.resources import GatewayResources
from aether_gateway.ws.close_codes import (
    CLOSE_SERVER_ERROR,
    CLOSE_UNAUTHENTICATED,
    MAX_REASON_CHARS,
)
from aether_gateway.ws.connection import Connection
from aether_gateway.ws.frames import AuthIn, BadFrame, Frame
from aether_gateway.ws.handshake import (
    Refused,
    WebSocketGone,
    authenticate,
    check_origin,
    check_url,
    first_frame,
)

log = get_logger(__name__)

CLOSE_SEND_TIMEOUT_S = 5.0


class Session(ABC):
    """One socket's connection; a subclass per socket says what differs (its protocol)."""

    # "chat", "ai": names the tasks and log lines.
    kind: ClassVar[str]
    # Closes sent, labelled by code.
    closes: ClassVar[Counter]

    def __init__(
        self, resources: GatewayResources, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.resources = resources
        self.settings = resources.settings
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = Headers(scope=scope)
        self.binary = False  # MessagePack frames, when the socket offers them and the client asks

    # -- what each socket says -----------------------------------------------------------------
    @property
    @abstractmethod
    def auth_timeout_s(self) -> float:
        """How long the first auth frame may take, when the upgrade had no Authorization."""

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        """The subprotocol to accept (and set `binary` for a MessagePack one); None: none."""
        return None

    @abstractmethod
    def check_available(self) -> None:
        """Raises Refused when the socket's upstream is not configured."""

    @abstractmethod
    def parse(self, text: str | None, data: bytes | None) -> Any:
        """A client message -> its frame model; BadFrame when it cannot be used."""

    @abstractmethod
    def auth_frame_read(self) -> None:
        """Called once the handshake's auth frame parsed (chat counts it)."""

    @abstractmethod
    def refusal_frame(self, refused: Refused) -> Frame:
        """The error frame a refusal with an error sends before its close code."""

    @abstractmethod
    def open(self, token: AccessToken) -> Connection:
        """The connection of a caller through the handshake, its ready frame queued."""

    @abstractmethod
    async def handle(self, conn: Connection, text: str | None, data: bytes | None) -> None:
        """One client message, in the order received."""

    def watchers(self, conn: Connection) -> list[Coroutine[Any, Any, None]]:
        """Tasks that live as long as the connection, besides its reader and writer."""
        return []

    @abstractmethod
    async def ended(self, conn: Connection) -> None:
        """After the connection's tasks stopped, before the close frame."""

    # -- the lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        first = await self.receive()
        if first["type"] != "websocket.connect":
            return
        subprotocol = self.subprotocol(self.scope.get("subprotocols") or [])
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol is not None:
            accept["subprotocol"] = subprotocol
        await self.send(accept)
        try:
            check_origin(self.headers, self.settings.cors_origins)
            check_url(self.scope)
            self.check_available()
            token = await authenticate(self.resources, self.scope, self.headers, self._auth_frame)
        except Refused as refused:
            await self._refuse(refused)
            return
        except WebSocketGone:
            return
        await self._serve(token)

    async def _auth_frame(self) -> str:
        message = await first_frame(self.receive, self.auth_timeout_s)
        try:
            frame = self.parse(message.get("text"), message.get("bytes"))
        except BadFrame as exc:
            raise Refused(
                CLOSE_UNAUTHENTICATED,
                f"expected an auth frame: {exc.detail}"[:MAX_REASON_CHARS],
                exc.code,
            ) from None
        if not isinstance(frame, AuthIn):
            raise Refused(
                CLOSE_UNAUTHENTICATED,
                "the first frame must be {'type':'auth','token':...}",
                "auth_required",
            )
        self.auth_frame_read()
        return frame.token

    async def _refuse(self, refused: Refused) -> None:
        self.closes.labels(str(refused.code)).inc()
        if refused.error is not None:
            with contextlib.suppress(Exception):
                await self.send(self.refusal_frame(refused).message(self.binary))
        with contextlib.suppress(Exception):
            await self.send(
                {"type": "websocket.close", "code": refused.code, "reason": refused.reason}
            )

    async def _serve(self, token: AccessToken) -> None:
        conn = self.open(token)
        kind = self.kind
        tasks = [
            asyncio.create_task(conn.write_loop(), name=f"{kind}-ws-writer"),
            asyncio.create_task(self._read_loop(conn), name=f"{kind}-ws-reader"),
            *(
                asyncio.create_task(watcher, name=f"{kind}-ws-watcher")
                for watcher in self.watchers(conn)
            ),
        ]
        try:
            await conn.finished
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.ended(conn)
        if conn.close_code is not None:
            self.closes.labels(str(conn.close_code)).inc()
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
                log.debug("close frame not sent", socket=kind, code=conn.close_code)

    async def _read_loop(self, conn: Connection) -> None:
        receive = self.receive
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    conn.close(None, "client disconnected")
                    return
                conn.last_recv = time.monotonic()
                await self.handle(conn, message.get("text"), message.get("bytes"))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"{self.kind} connection failed", user_id=conn.user_id)
            conn.close(CLOSE_SERVER_ERROR, "internal error")


class SocketApp:
    """The ASGI app behind a socket's route: one `session` per connection."""

    def __init__(self, session: type[Session]) -> None:
        self._session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        resources: GatewayResources = scope["app"].state.gateway
        await self._session(resources, scope, receive, send).run()
