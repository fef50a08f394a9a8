"""When a connection ends for silence or an expired token, and when it gets a heartbeat.

One set of rules (`Liveness.check`) for every socket. Who applies them differs: chat's hub
sweeps all its connections in one task (it sweeps for presence anyway, and one timer beats
thousands), the AI socket watches each connection (`Liveness.watch`), because a connection
generating an answer is busy, not idle, and only that socket knows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aether_gateway.ws.close_codes import CLOSE_IDLE, CLOSE_UNAUTHENTICATED
from aether_gateway.ws.connection import Connection
from aether_gateway.ws.frames import PING

# Checks run at most this far apart (less with a short idle timeout or heartbeat).
MAX_TICK_S = 1.0


def _never_busy() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Liveness:
    idle_timeout_s: float
    token_leeway_s: float
    heartbeat_s: float | None = None  # None: the server sends no pings

    @property
    def tick_s(self) -> float:
        tick = min(MAX_TICK_S, self.idle_timeout_s / 4)
        return tick if self.heartbeat_s is None else min(tick, self.heartbeat_s / 4)

    def check(self, conn: Connection, now: float, wall: float, *, busy: bool = False) -> None:
        """Closes `conn` when idle (nothing received for the idle timeout, unless `busy`) or its
        token expired (an `auth` frame renews it); else pings it when due."""
        idle = now - conn.last_recv
        if idle >= self.idle_timeout_s and not busy:
            conn.close(CLOSE_IDLE, f"idle timeout: nothing received for {self.idle_timeout_s:g} s")
        elif wall > conn.token.expires_at + self.token_leeway_s:
            conn.close(CLOSE_UNAUTHENTICATED, "access token expired")
        elif (
            self.heartbeat_s is not None
            and idle >= self.heartbeat_s
            and now - conn.last_ping >= self.heartbeat_s
        ):
            conn.last_ping = now
            conn.push(PING)

    async def watch(self, conn: Connection, busy: Callable[[], bool] = _never_busy) -> None:
        """Checks one connection every tick until it closes."""
        tick = self.tick_s
        while not conn.closing:
            await asyncio.sleep(tick)
            self.check(conn, time.monotonic(), time.time(), busy=busy())
