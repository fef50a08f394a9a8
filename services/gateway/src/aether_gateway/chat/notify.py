"""In-app alert notifications on the chat socket (`WS /api/chat/connect`, the one socket a client
keeps open): docs/alerts.md, "In-app delivery".

alerts PUBLISHes each notification on `<prefix>user:<user_id>` as the exact JSON text the client
gets. The chat hub follows a user's channel while that user has at least one chat socket on this
gateway (first socket opens -> SUBSCRIBE, last one closes -> UNSUBSCRIBE); each frame goes,
unchanged, to every one of that user's sockets here (multi-device), never to anyone else's.

Delivery is ephemeral, the inbox (`GET /api/notifications`) is the record: a socket opened later
gets no replay, and what is published while the pub/sub connection is down is lost. After such a
loss every socket here gets `{"type":"notification_gap"}` (once the channels are subscribed
again), telling the client to re-read the inbox.

Its own pub/sub connection (a second `Fanout`), even when alerts publishes in the chat fan-out's
Redis: one per gateway process whatever its number of users, and a loss of either one resyncs
only its own side (chat re-reads room history, this one sends the gap frame).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import orjson

from aether_common.logging import get_logger
from aether_gateway.chat.metrics import (
    NOTIFY_DELIVERED,
    NOTIFY_DROPPED,
    NOTIFY_FANOUT_BAD,
    NOTIFY_FANOUT_IN,
    NOTIFY_RECONNECTS,
    NOTIFY_USERS,
)
from aether_gateway.fanout import Fanout
from aether_gateway.ws.frames import Frame

if TYPE_CHECKING:
    from aether_gateway.chat.hub import ChatConnection

log = get_logger(__name__)

SUBSCRIBE_CONFIRM_TIMEOUT_S = 5.0
GAP = Frame.of(
    {
        "type": "notification_gap",
        "detail": "live notifications were interrupted: some may be missing; "
        "read GET /api/notifications",
    }
)


class Notifications:
    """`users` is the hub's own map of user id -> that user's open chat sockets here."""

    def __init__(
        self, url: str, prefix: str, users: Mapping[str, Sequence[ChatConnection]]
    ) -> None:
        self.users = users
        self.fanout = Fanout(
            url,
            prefix + "user:",
            name="alerts-notify",
            on_frame=self.dispatch,
            on_resync=self.resync,
            frames_in=NOTIFY_FANOUT_IN,
            reconnects=NOTIFY_RECONNECTS,
        )
        self._bad_logged = 0

    def start(self) -> None:
        self.fanout.start()

    async def close(self) -> None:
        await self.fanout.close()

    async def follow(self, user_id: str) -> bool:
        """The user's first chat socket here opened: subscribe their channel. True once Redis
        confirmed it (False: not yet, it is subscribed as soon as Redis is back)."""
        if user_id not in self.users:
            return False  # the socket closed before this task ran: nothing to unsubscribe later
        confirmed = await self.fanout.subscribe(user_id, SUBSCRIBE_CONFIRM_TIMEOUT_S)
        NOTIFY_USERS.set(self.fanout.channels)
        return confirmed

    def unfollow(self, user_id: str) -> None:
        """Their last one closed."""
        self.fanout.unsubscribe(user_id)
        NOTIFY_USERS.set(self.fanout.channels)

    # -- called by Fanout ------------------------------------------------------------------------
    def dispatch(self, user_id: str, data: bytes) -> None:
        conns = self.users.get(user_id)
        if not conns:
            return  # the last socket closed meanwhile
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._bad_frame(user_id, "not JSON")
            return
        if type(obj) is not dict or obj.get("type") != "notification":
            self._bad_frame(user_id, "not a notification object")
            return
        frame = Frame("notification", obj, data.decode())  # alerts' text, unchanged
        sent = 0
        for conn in conns:
            if conn.push(frame):
                sent += 1
        NOTIFY_DELIVERED.inc(sent)
        if sent < len(conns):
            NOTIFY_DROPPED.inc(len(conns) - sent)

    def resync(self) -> None:
        """The pub/sub connection was lost and every channel is subscribed again: whatever was
        published meanwhile is gone, so every socket here is told to re-read the inbox."""
        for conns in list(self.users.values()):
            for conn in conns:
                conn.push(GAP)

    def _bad_frame(self, user_id: str, why: str) -> None:
        NOTIFY_FANOUT_BAD.inc()
        if self._bad_logged < 20:
            self._bad_logged += 1
            log.warning("notification fan-out: frame ignored", user_id=user_id, reason=why)
