"""The gateway's local view of chat: which connection follows which room, and delivery.

Delivery guarantees (docs/chat.md): per connection and room the hub tracks the last message seq
delivered (`Subscription.last`). A live message frame is
- delivered when its seq is last + 1,
- dropped when it is <= last (already delivered: a duplicate or a late reordered copy),
- a gap otherwise: the subscription leaves the live set for a catch-up (`CatchUp`) that buffers
  every frame of the room, waits `gap_grace_s` for the missing frame (pub/sub reordering), and
  if still missing reads GetHistory(after_seq=last), delivers those in order, then flushes its
  buffer skipping what was delivered, and goes live again.
Subscriptions with the same `last` that hit the same gap share ONE catch-up (one GetHistory for
all of them). Resume is the same mechanism: subscribe registers the subscription in a catch-up
first (live frames buffered from the moment Redis confirms the channel), pages GetHistory from
`after_seq` until caught up, then flushes: everything missed, in order, exactly once, before
any live frame.

Fan-out: a frame from Redis is parsed once (orjson) and wrapped in one `Frame` whose text (the
bytes chat published, unchanged) and, when needed, MessagePack bytes are shared by every
connection; per delivery the hub does a comparison and a deque append (connection.push).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import orjson
from prometheus_client import Counter

from aether.chat.v1 import chat_pb2
from aether_common.access_tokens import AccessToken
from aether_common.errors import AetherError
from aether_common.logging import get_logger
from aether_gateway.chat import convert
from aether_gateway.chat.client import ChatClient
from aether_gateway.chat.frames import RoomCursor, error_frame, error_from
from aether_gateway.chat.metrics import (
    CONNECTIONS,
    DUPLICATES,
    FANOUT_BAD,
    FANOUT_IN,
    FANOUT_RECONNECTS,
    FRAMES_OUT,
    GAP_FILLS,
    ROOMS,
)
from aether_gateway.chat.notify import Notifications
from aether_gateway.fanout import Fanout
from aether_gateway.ws.close_codes import CLOSE_RESTART, CLOSE_UNAUTHENTICATED
from aether_gateway.ws.connection import Connection, Send, SlidingLog
from aether_gateway.ws.frames import Frame
from aether_gateway.ws.liveness import Liveness

log = get_logger(__name__)

FANOUT_KINDS = ("message", "edit", "delete", "typing", "presence", "read", "member")
_OUT = {kind: FRAMES_OUT.labels(kind) for kind in (*FANOUT_KINDS, "other")}
GONE_EVENTS = frozenset(("left", "removed"))
HISTORY_RETRIES = (0.2, 0.5, 1.0)
SUBSCRIBE_CONFIRM_TIMEOUT_S = 5.0
PRESENCE_CONCURRENCY = 16


class ChatConnection(Connection):
    """A chat client's connection (ws/connection.py) and the rooms it follows."""

    __slots__ = ("subs",)

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
        super().__init__(
            send,
            token,
            binary=binary,
            max_queue=max_queue,
            rate=rate,
            client_ip=client_ip,
            overflows=overflows,
        )
        self.subs: dict[str, Subscription] = {}


class Subscription:
    """One connection following one room."""

    __slots__ = ("conn", "group", "last", "room")

    def __init__(self, conn: ChatConnection, room: Room) -> None:
        self.conn = conn
        self.room = room
        self.last = 0
        self.group: CatchUp | None = None


class CatchUp:
    """Subscriptions of one room being brought up to date from history (resume, gap, resync)."""

    __slots__ = ("done", "last", "pending", "reason", "refetch", "room", "subs")

    def __init__(self, room: Room, subs: list[Subscription], last: int | None, reason: str) -> None:
        self.room = room
        self.subs = subs
        self.last = last  # None: subscribe without after_seq (live from now on)
        self.reason = reason
        self.pending: list[Frame] = []
        self.refetch = False
        self.done = False
        for sub in subs:
            sub.group = self


class Room:
    __slots__ = ("groups", "live", "ready", "room_id")

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.live: dict[ChatConnection, Subscription] = {}
        self.groups: list[CatchUp] = []
        self.ready: asyncio.Task[bool] | None = None  # the Redis subscription, confirmed

    @property
    def empty(self) -> bool:
        return not self.live and not self.groups


class ChatHub:
    def __init__(
        self,
        chat: ChatClient | None,
        fanout_url: str,
        fanout_prefix: str,
        *,
        history_page: int = 100,
        gap_grace_s: float = 0.05,
        max_rooms: int = 500,
        heartbeat_s: float = 20.0,
        idle_timeout_s: float = 60.0,
        presence_interval_s: float = 30.0,
        token_leeway_s: float = 0.0,
        notify_url: str | None = None,
        notify_prefix: str = "alerts:notify:",
    ) -> None:
        self.chat = chat
        self.fanout = Fanout(
            fanout_url,
            fanout_prefix + "room:",
            name="chat",
            on_frame=self.dispatch,
            on_resync=self.resync,
            frames_in=FANOUT_IN,
            reconnects=FANOUT_RECONNECTS,
        )
        self.history_page = history_page
        self.gap_grace_s = gap_grace_s
        self.max_rooms = max_rooms
        self.liveness = Liveness(idle_timeout_s, token_leeway_s, heartbeat_s)
        self.presence_interval_s = presence_interval_s
        self.rooms: dict[str, Room] = {}
        self.connections: set[ChatConnection] = set()
        self.users: dict[str, list[ChatConnection]] = {}
        self._presence_due: dict[str, float] = {}
        self._presence_slots = asyncio.Semaphore(PRESENCE_CONCURRENCY)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._bad_logged = 0
        # Alert notifications to the users' sockets (notify.py); None: alerts not configured.
        self.notifications = (
            Notifications(notify_url, notify_prefix, self.users) if notify_url else None
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.fanout.start()
        if self.notifications is not None:
            self.notifications.start()
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="chat-sweeper")

    async def close(self) -> None:
        for conn in list(self.connections):
            conn.close(CLOSE_RESTART, "server restarting")
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.fanout.close()
        if self.notifications is not None:
            await self.notifications.close()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- connections -----------------------------------------------------------------------------
    def add(self, conn: ChatConnection) -> None:
        self.connections.add(conn)
        CONNECTIONS.inc()
        conns = self.users.setdefault(conn.user_id, [])
        conns.append(conn)
        if len(conns) == 1:
            self._presence_due[conn.user_id] = time.monotonic() + self.presence_interval_s
            self.spawn(self._presence(conn.token.raw, True), "chat-presence")
            if self.notifications is not None:
                self.spawn(self.notifications.follow(conn.user_id), "chat-notify-subscribe")

    def remove(self, conn: ChatConnection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        CONNECTIONS.dec()
        for sub in list(conn.subs.values()):
            self._drop(sub)
        conns = self.users.get(conn.user_id, [])
        if conn in conns:
            conns.remove(conn)
        if not conns:
            self.users.pop(conn.user_id, None)
            self._presence_due.pop(conn.user_id, None)
            self.spawn(self._presence(conn.token.raw, False), "chat-presence")
            if self.notifications is not None:
                self.notifications.unfollow(conn.user_id)

    # -- subscriptions ---------------------------------------------------------------------------
    async def subscribe(
        self, conn: ChatConnection, cursors: Iterable[RoomCursor], request_id: str | None = None
    ) -> None:
        assert self.chat is not None
        wanted: dict[str, RoomCursor] = {}
        for cursor in cursors:
            if cursor.room_id in conn.subs:
                # Already followed: say so again, change nothing (delivery is exactly-once).
                conn.push(self._subscribed(cursor.room_id, None, request_id))
            else:
                wanted.setdefault(cursor.room_id, cursor)
        if not wanted:
            return
        room_ids = list(wanted)
        room_space = self.max_rooms - len(conn.subs)
        if len(room_ids) > room_space:
            for room_id in room_ids[max(room_space, 0) :]:
                conn.push(
                    error_frame(
                        "too_many_rooms",
                        f"a connection follows at most {self.max_rooms} rooms",
                        op="subscribe",
                        request_id=request_id,
                        room_id=room_id,
                    )
                )
            room_ids = room_ids[: max(room_space, 0)]
        if not room_ids:
            return
        try:
            answer = await self.chat.call(
                self.chat.stub.CheckMembership,
                chat_pb2.CheckMembershipRequest(room_ids=room_ids),
                token=conn.token.raw,
            )
        except AetherError as exc:
            for room_id in room_ids:
                conn.push(error_from(exc, op="subscribe", request_id=request_id, room_id=room_id))
            return
        member_of = set(answer.member_of)
        for room_id in room_ids:
            if conn.closing:
                return
            if room_id not in member_of:
                conn.push(
                    error_frame(
                        "not_member",
                        "you are not a member of this room",
                        op="subscribe",
                        request_id=request_id,
                        room_id=room_id,
                    )
                )
                continue
            if room_id in conn.subs:
                continue  # a concurrent subscribe got there first
            after_seq = wanted[room_id].after_seq
            room = self._room(room_id)
            sub = Subscription(conn, room)
            conn.subs[room_id] = sub
            group = CatchUp(room, [sub], after_seq, "resume" if after_seq is not None else "join")
            room.groups.append(group)
            conn.push(self._subscribed(room_id, after_seq, request_id))
            self.spawn(self._catch_up(group, grace=0.0), "chat-catch-up")

    def unsubscribe(
        self, conn: ChatConnection, room_ids: Iterable[str], request_id: str | None = None
    ) -> None:
        for room_id in room_ids:
            sub = conn.subs.get(room_id)
            if sub is None:
                conn.push(
                    error_frame(
                        "not_subscribed",
                        "this connection does not follow that room",
                        op="unsubscribe",
                        request_id=request_id,
                        room_id=room_id,
                    )
                )
                continue
            self._drop(sub)
            conn.push(self._unsubscribed(room_id, "client", request_id))

    def _room(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(room_id)
            ROOMS.inc()
            room.ready = asyncio.create_task(
                self.fanout.subscribe(room_id, SUBSCRIBE_CONFIRM_TIMEOUT_S), name="chat-subscribe"
            )
        return room

    def _drop(self, sub: Subscription) -> None:
        conn, room = sub.conn, sub.room
        if conn.subs.get(room.room_id) is sub:
            del conn.subs[room.room_id]
        group = sub.group
        if group is not None:
            sub.group = None
            if sub in group.subs:
                group.subs.remove(sub)
            if not group.subs and not group.done:
                group.done = True
                room.groups.remove(group)
        else:
            room.live.pop(conn, None)
        if room.empty and self.rooms.get(room.room_id) is room:
            del self.rooms[room.room_id]
            ROOMS.dec()
            self.fanout.unsubscribe(room.room_id)

    @staticmethod
    def _subscribed(room_id: str, after_seq: int | None, request_id: str | None) -> Frame:
        obj: dict[str, Any] = {"type": "subscribed", "room_id": room_id, "after_seq": after_seq}
        if request_id is not None:
            obj["id"] = request_id
        return Frame.of(obj)

    @staticmethod
    def _unsubscribed(room_id: str, reason: str, request_id: str | None = None) -> Frame:
        obj: dict[str, Any] = {"type": "unsubscribed", "room_id": room_id, "reason": reason}
        if request_id is not None:
            obj["id"] = request_id
        return Frame.of(obj)

    # -- fan-out: called by Fanout for every frame of a followed room ---------------------------
    def dispatch(self, room_id: str, data: bytes) -> None:
        room = self.rooms.get(room_id)
        if room is None:
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._bad_frame(room_id, "not JSON")
            return
        if type(obj) is not dict:
            self._bad_frame(room_id, "not an object")
            return
        kind = obj.get("type")
        if kind == "message":
            seq = obj.get("seq")
            if type(seq) is not int:
                self._bad_frame(room_id, "message without an integer seq")
                return
            self._deliver_message(room, Frame("message", obj, data.decode(), seq), seq)
            return
        if type(kind) is not str:
            self._bad_frame(room_id, "no type")
            return
        frame = Frame(kind, obj, data.decode())
        live = room.live
        for sub in live.values():
            sub.conn.push(frame)
        for group in room.groups:
            self._buffer(group, frame)
        (_OUT.get(kind) or _OUT["other"]).inc(len(live))
        if kind == "member" and obj.get("event") in GONE_EVENTS:
            user_id = obj.get("user_id")
            if isinstance(user_id, str):
                self._member_gone(room_id, user_id, str(obj["event"]))

    def _deliver_message(self, room: Room, frame: Frame, seq: int) -> None:
        gapped: list[Subscription] | None = None
        sent = 0
        for sub in room.live.values():
            last = sub.last
            if seq == last + 1:
                sub.last = seq
                sub.conn.push(frame)
                sent += 1
            elif seq > last:
                if gapped is None:
                    gapped = []
                gapped.append(sub)
        for group in room.groups:
            self._buffer(group, frame)
        _OUT["message"].inc(sent)
        dropped = len(room.live) - sent - (len(gapped) if gapped else 0)
        if dropped:
            DUPLICATES.inc(dropped)
        if gapped is not None:
            self._start_gap_fill(room, gapped, frame)

    def _buffer(self, group: CatchUp, frame: Frame) -> None:
        pending = group.pending
        pending.append(frame)
        # A catch-up that cannot keep up (chat slow, huge backlog) must not hold frames without
        # bound: forget them, they are read again from history.
        if len(pending) > 4 * max(self.history_page, 256):
            pending.clear()
            group.refetch = True

    def _start_gap_fill(self, room: Room, gapped: list[Subscription], frame: Frame) -> None:
        by_last: dict[int, list[Subscription]] = {}
        for sub in gapped:
            room.live.pop(sub.conn, None)
            by_last.setdefault(sub.last, []).append(sub)
        for last, subs in by_last.items():
            group = CatchUp(room, subs, last, "gap")
            group.pending.append(frame)
            room.groups.append(group)
            self.spawn(self._catch_up(group, grace=self.gap_grace_s), "chat-gap-fill")

    def _member_gone(self, room_id: str, user_id: str, event: str) -> None:
        for conn in list(self.users.get(user_id, ())):
            sub = conn.subs.get(room_id)
            if sub is not None:
                self._drop(sub)
                conn.push(self._unsubscribed(room_id, event))

    def resync(self) -> None:
        """The fan-out connection was lost and is back: frames may have been missed in every
        room, so each room's subscriptions are checked against history (one read per group)."""
        for room in list(self.rooms.values()):
            for group in room.groups:
                group.refetch = True
            if room.live:
                by_last: dict[int, list[Subscription]] = {}
                for sub in room.live.values():
                    by_last.setdefault(sub.last, []).append(sub)
                room.live.clear()
                for last, subs in by_last.items():
                    group = CatchUp(room, subs, last, "resync")
                    room.groups.append(group)
                    self.spawn(self._catch_up(group, grace=0.0), "chat-resync")

    def _bad_frame(self, room_id: str, why: str) -> None:
        FANOUT_BAD.inc()
        if self._bad_logged < 20:
            self._bad_logged += 1
            log.warning("chat fan-out: frame ignored", room_id=room_id, reason=why)

    # -- catch-up (resume, gap fill, resync) -----------------------------------------------------
    async def _catch_up(self, group: CatchUp, *, grace: float) -> None:
        assert self.chat is not None
        room = group.room
        GAP_FILLS.labels(group.reason).inc()
        try:
            if room.ready is not None:
                await asyncio.shield(room.ready)  # live frames reach group.pending from here on
            if grace > 0:
                await asyncio.sleep(grace)
                if group.last is not None and not group.refetch and self._flush(group):
                    return
            failures = 0
            while group.subs and not group.done:
                reader = group.subs[0]
                group.refetch = False
                try:
                    if group.last is None:
                        # Live from now on: what is already stored counts as seen.
                        page = await self._history(reader, room.room_id, limit=1)
                        group.last = page.last_seq
                    else:
                        page = await self._history(
                            reader, room.room_id, after_seq=group.last, limit=self.history_page
                        )
                        await self._deliver_history(group, page.messages)
                        if page.has_more and page.messages:
                            continue
                except AetherError as exc:
                    if exc.http_status in (401, 403, 404):
                        # This reader may no longer read the room: it leaves, others go on.
                        self._drop(reader)
                        if exc.http_status == 401:
                            reader.conn.close(CLOSE_UNAUTHENTICATED, exc.detail)
                        else:
                            reader.conn.push(error_from(exc, op="subscribe", room_id=room.room_id))
                            reader.conn.push(self._unsubscribed(room.room_id, "not_member"))
                        continue
                    if failures >= len(HISTORY_RETRIES):
                        self._give_up(group, exc)
                        return
                    await asyncio.sleep(HISTORY_RETRIES[failures])
                    failures += 1
                    continue
                if not group.refetch and self._flush(group):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("chat catch-up failed", room_id=room.room_id, reason=group.reason)
            self._give_up(group, None)

    async def _history(
        self, sub: Subscription, room_id: str, *, after_seq: int = 0, limit: int
    ) -> chat_pb2.GetHistoryResponse:
        assert self.chat is not None
        request = chat_pb2.GetHistoryRequest(room_id=room_id, after_seq=after_seq, limit=limit)
        return await self.chat.call(self.chat.stub.GetHistory, request, token=sub.conn.token.raw)

    async def _deliver_history(self, group: CatchUp, messages: Iterable[chat_pb2.Message]) -> None:
        assert group.last is not None
        frames = []
        last = group.last
        for message in messages:
            if message.seq <= last:
                continue
            obj = convert.message_frame(message)
            frames.append(Frame("message", obj, orjson.dumps(obj).decode(), message.seq))
            last = message.seq
        if not frames:
            return
        for sub in list(group.subs):
            await sub.conn.room_for(len(frames))
        if group.done:
            return
        for sub in group.subs:
            push = sub.conn.push
            for frame in frames:
                push(frame)
        _OUT["message"].inc(len(frames) * len(group.subs))
        group.last = last

    def _flush(self, group: CatchUp, *, force: bool = False) -> bool:
        """Deliver the buffered frames past `last`, messages in seq order, and go live; False
        (nothing lost, the rest kept) while a seq is still missing. Synchronous: no frame can
        slip in between."""
        if group.done:
            return True
        assert group.last is not None
        pending, group.pending = group.pending, []
        last = group.last
        subs = group.subs
        held: dict[int, Frame] = {}  # arrived ahead of a missing seq
        for frame in pending:
            if frame.kind == "message":
                seq = frame.seq
                if seq <= last or seq in held:
                    continue
                if seq != last + 1:
                    held[seq] = frame
                    continue
                last = seq
                for sub in subs:
                    sub.conn.push(frame)
                while last + 1 in held:
                    last += 1
                    following = held.pop(last)
                    for sub in subs:
                        sub.conn.push(following)
            else:
                for sub in subs:
                    sub.conn.push(frame)
        if held:
            if not force:
                group.pending = [held[seq] for seq in sorted(held)]
                group.last = last
                return False
            for seq in sorted(held):
                for sub in subs:
                    sub.conn.push(held[seq])
                last = seq
        group.last = last
        group.done = True
        room = group.room
        room.groups.remove(group)
        synced = None
        if group.reason in ("join", "resume"):
            synced = Frame.of({"type": "synced", "room_id": room.room_id, "last_seq": last})
        for sub in subs:
            sub.group = None
            sub.last = last
            room.live[sub.conn] = sub
            if synced is not None:
                sub.conn.push(synced)
        return True

    def _give_up(self, group: CatchUp, exc: AetherError | None) -> None:
        """History stays unreachable: go live with what was buffered, and tell the clients which
        room may have a hole (they can re-subscribe with after_seq later)."""
        if group.done:
            return
        detail = "message history is unavailable; some messages may be missing"
        frame = error_frame(
            "history_unavailable",
            exc.detail if exc is not None else detail,
            room_id=group.room.room_id,
            after_seq=group.last,
        )
        for sub in group.subs:
            sub.conn.push(frame)
        if group.last is None:
            group.last = 0
            first = next((f.seq for f in group.pending if f.kind == "message"), 1)
            group.last = first - 1
        self._flush(group, force=True)

    # -- heartbeats, expiry, presence ------------------------------------------------------------
    async def _sweep_forever(self) -> None:
        tick = self.liveness.tick_s
        while True:
            await asyncio.sleep(tick)
            try:
                self.sweep()
            except Exception:
                log.exception("chat sweep failed")

    def sweep(self) -> None:
        """Idle connections and expired tokens closed, heartbeats sent (ws/liveness.py), then
        the presence refresh of the users online here."""
        now = time.monotonic()
        wall = time.time()
        check = self.liveness.check
        for conn in list(self.connections):
            if not conn.closing:
                check(conn, now, wall)
        for user_id, due in list(self._presence_due.items()):
            if now >= due:
                conns = self.users.get(user_id)
                if not conns:
                    continue
                self._presence_due[user_id] = now + self.presence_interval_s
                self.spawn(self._presence(conns[0].token.raw, True), "chat-presence")

    async def _presence(self, token: str, online: bool) -> None:
        if self.chat is None:
            return
        async with self._presence_slots:
            try:
                await self.chat.call(
                    self.chat.stub.UpdatePresence,
                    chat_pb2.UpdatePresenceRequest(online=online),
                    token=token,
                )
            except AetherError as exc:
                log.debug("presence update failed", online=online, error=exc.error_code)
