"""One client connection: its outbound queue and writer, its frame rate limit, its end.

Fan-out calls `push(frame)`: no await, no lock, no encoding (the frame is encoded already), one
bounded deque append. The connection's own writer task drains the deque into the socket, so a
slow client only ever slows itself; when its deque is full the connection is closed (4009)
instead of buffering without bound or holding up anyone else. `close()` only asks for the end:
the session (session.py) stops the tasks and sends the close frame.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

from aether_common.access_tokens import AccessToken
from aether_gateway.rate_limit import UNLIMITED_PERMISSION, RatePolicy
from aether_gateway.ws.close_codes import CLOSE_TOO_SLOW, MAX_REASON_CHARS
from aether_gateway.ws.frames import Frame

Send = Callable[[dict[str, Any]], Awaitable[None]]

_ids = itertools.count(1)


def frame_limit(policy: RatePolicy, token: AccessToken) -> int | None:
    """Client frames per window for this caller's connections (None: unlimited)."""
    if UNLIMITED_PERMISSION in token.permissions:
        return None
    return policy.limit_for(token.plan)


class SlidingLog:
    """At most `limit` events in ANY `window_s` (the HTTP limiter's semantics, in memory)."""

    __slots__ = ("_log", "limit", "window_s")

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._log: deque[float] = deque()

    def hit(self, now: float) -> float:
        """0 when admitted (and counted), else the seconds until one more would be."""
        log = self._log
        cutoff = now - self.window_s
        while log and log[0] <= cutoff:
            log.popleft()
        if len(log) < self.limit:
            log.append(now)
            return 0.0
        return max(0.001, log[0] - cutoff)


class Connection:
    __slots__ = (
        "__weakref__",
        "_room_waiter",
        "_waiter",
        "binary",
        "client_ip",
        "close_code",
        "close_reason",
        "closing",
        "finished",
        "id",
        "last_ping",
        "last_recv",
        "max_queue",
        "overflows",
        "queue",
        "rate",
        "send",
        "token",
        "user_id",
    )

    def __init__(
        self,
        send: Send,
        token: AccessToken,
        *,
        binary: bool,
        max_queue: int,
        rate: SlidingLog | None,
        client_ip: str = "",
        overflows: Counter | None = None,
    ) -> None:
        self.id = next(_ids)
        self.send = send
        self.token = token
        self.user_id = token.subject
        self.binary = binary
        self.max_queue = max_queue
        self.rate = rate
        self.client_ip = client_ip
        self.overflows = overflows
        self.queue: deque[Frame] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._room_waiter: asyncio.Future[None] | None = None
        self.closing = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        self.last_recv = now
        self.last_ping = now

    def __repr__(self) -> str:
        return f"Connection({self.id}, user={self.user_id})"

    # -- the hot path ----------------------------------------------------------------------------
    def push(self, frame: Frame) -> bool:
        """Queue `frame`; False when it was dropped (the connection is closing, or its queue
        was full and it is closed now), so that a fan-out can count what it could not deliver."""
        if self.closing:
            return False
        queue = self.queue
        if len(queue) >= self.max_queue:
            if self.overflows is not None:
                self.overflows.inc()
            self.close(
                CLOSE_TOO_SLOW,
                f"too slow: more than {self.max_queue} frames waiting to be sent",
            )
            return False
        queue.append(frame)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return True

    async def write_loop(self) -> None:
        """The connection's writer: one at a time, in order, until cancelled or the socket
        fails (then the connection finishes without a close frame)."""
        queue = self.queue
        send = self.send
        binary = self.binary
        loop = asyncio.get_running_loop()
        try:
            while True:
                while queue:
                    frame = queue.popleft()
                    await send(frame.msgpack_send if binary else frame.json_send)
                    if self._room_waiter is not None and len(queue) <= self.max_queue // 2:
                        self._wake_room_waiter()
                waiter = loop.create_future()
                self._waiter = waiter
                await waiter
        except asyncio.CancelledError:
            raise
        except Exception:  # the client went away mid-send (ClientDisconnected, OSError...)
            self.close(None, "")

    async def room_for(self, frames: int) -> None:
        """Wait until `frames` more fit (history catch-up: a backlog waits, live frames don't)."""
        frames = min(frames, self.max_queue // 2)
        while not self.closing and len(self.queue) + frames > self.max_queue:
            if self._room_waiter is None:
                self._room_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._room_waiter)

    def _wake_room_waiter(self) -> None:
        waiter, self._room_waiter = self._room_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- ending ----------------------------------------------------------------------------------
    def close(self, code: int | None, reason: str) -> None:
        """Ask for the connection to end (code None: the client is gone, no close frame).
        Idempotent; the session does the closing (session.py) once `finished` resolves."""
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        self.close_reason = reason[:MAX_REASON_CHARS]
        self.queue.clear()
        self._wake_room_waiter()
        if not self.finished.done():
            self.finished.set_result(None)
