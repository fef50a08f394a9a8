"""A Redis pub/sub connection subscribed to the channels a socket's clients follow: ONE per
socket kind per gateway process, whatever its number of connections.

chat publishes each frame on `<prefix>room:<room_id>` (docs/chat.md), charts each tick and bar
on `<prefix>symbol:<SYMBOL>` (docs/charts.md). A hub (chat/hub.py, market/hub.py) asks for a
key (a room, a symbol) when its first local subscriber arrives and gives it up with the last
one; this module keeps the Redis side equal to that set, across reconnects.

Why not redis-py's PubSub: its read path costs several awaits and observability hooks per
message, and it cannot tell us when a SUBSCRIBE took effect. Resume without gaps needs exactly
that: history is read only once the live subscription is confirmed. The protocol needed here is
small (SUBSCRIBE, UNSUBSCRIBE, PING, AUTH; RESP2 push replies), parsed with hiredis when present.

Confirmation rule: per channel, every SUBSCRIBE written is counted; a `subscribe` reply counts
one down; waiters are released when the count reaches zero, i.e. when the LAST subscribe sent
took effect (a subscribe -> unsubscribe -> subscribe sequence is confirmed by the second reply).
After a lost connection every wanted channel is subscribed again and, once all are confirmed,
`on_resync` runs: frames published while disconnected are lost, so chat's hub re-checks each
room against GetHistory (the market hub tells its clients instead: its frames have no history).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from prometheus_client import Counter

from aether_common.logging import get_logger

try:  # the C parser redis-py uses too; a small pure-Python one otherwise
    import hiredis

    def _new_parser() -> Any:
        return hiredis.Reader()

except ImportError:  # pragma: no cover - hiredis ships with redis[hiredis]

    def _new_parser() -> Any:
        return RespParser()


log = get_logger(__name__)

READ_CHUNK = 262_144


class FanoutProtocolError(Exception):
    pass


class RespParser:
    """RESP2 (what pub/sub replies use), hiredis.Reader's feed()/gets() interface."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def gets(self) -> Any:
        try:
            value, pos = self._parse(self._pos)
        except IndexError:
            return False
        self._pos = pos
        return value

    def _line(self, pos: int) -> tuple[bytes, int]:
        end = self._buf.find(b"\r\n", pos)
        if end < 0:
            raise IndexError
        return bytes(self._buf[pos:end]), end + 2

    def _parse(self, pos: int) -> tuple[Any, int]:
        if pos >= len(self._buf):
            raise IndexError
        marker = self._buf[pos : pos + 1]
        line, pos = self._line(pos + 1)
        if marker == b"+":
            return line, pos
        if marker == b"-":
            return FanoutProtocolError(line.decode(errors="replace")), pos
        if marker == b":":
            return int(line), pos
        if marker == b"$":
            size = int(line)
            if size < 0:
                return None, pos
            if pos + size + 2 > len(self._buf):
                raise IndexError
            return bytes(self._buf[pos : pos + size]), pos + size + 2
        if marker == b"*":
            count = int(line)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        raise FanoutProtocolError(f"unexpected RESP marker {marker!r}")


def command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class Fanout:
    """Channels `<channel_prefix><key>`; `on_frame(key, data)` for each message on them.

    `name` ("chat", "market") names the task, the log lines and the connection in CLIENT LIST;
    `frames_in` and `reconnects` are the socket's own counters."""

    def __init__(
        self,
        url: str,
        channel_prefix: str,
        *,
        name: str,
        on_frame: Callable[[str, bytes], None],
        on_resync: Callable[[], None],
        frames_in: Counter,
        reconnects: Counter,
        connect_timeout_s: float = 2.0,
        ping_interval_s: float = 10.0,
    ) -> None:
        self.url = url
        self.name = name
        self.channel_prefix = channel_prefix.encode()
        self._frames_in = frames_in
        self._reconnects = reconnects
        self._on_frame = on_frame
        self._on_resync = on_resync
        self._connect_timeout_s = connect_timeout_s
        self._ping_interval_s = ping_interval_s
        self._wanted: set[bytes] = set()
        self._unconfirmed: dict[bytes, int] = {}
        self._waiters: dict[bytes, list[asyncio.Future[bool]]] = {}
        self._keys: dict[bytes, str] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._resync_due = False
        self.connected = False
        self._bad_frames_logged = 0
        # In CLIENT LIST: which process (host, pid) and which fan-out of it.
        self.client_name = (
            f"aether-gateway-{name}-fanout:"
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )

    # -- what the hub calls ----------------------------------------------------------------------
    def channel(self, key: str) -> bytes:
        return self.channel_prefix + key.encode()

    async def subscribe(self, key: str, timeout_s: float) -> bool:
        """Subscribe (if not yet) and wait until Redis confirmed it; False after timeout_s
        (Redis unreachable: the channel is subscribed as soon as the connection is back)."""
        channel = self.channel(key)
        self._keys[channel] = key
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._write_subscribe([channel])
        elif not self._unconfirmed.get(channel) and self.connected:
            waiter.set_result(True)  # already live
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(waiter)
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(channel)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)

    def unsubscribe(self, key: str) -> None:
        channel = self.channel(key)
        if channel not in self._wanted:
            return
        self._wanted.discard(channel)
        self._keys.pop(channel, None)
        for waiter in self._waiters.pop(channel, []):
            if not waiter.done():
                waiter.set_result(False)
        if self._writer is not None:
            self._writer.write(command(b"UNSUBSCRIBE", channel))

    @property
    def channels(self) -> int:
        return len(self._wanted)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.name}-fanout")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.1
        first = True
        while True:
            try:
                reader, writer = await self._connect()
            except (OSError, TimeoutError, FanoutProtocolError) as exc:
                if delay >= 1.0 or first:
                    log.warning(
                        "fan-out: cannot connect to redis", fanout=self.name, error=_describe(exc)
                    )
                first = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            self._writer = writer
            self.connected = True
            self._unconfirmed.clear()
            if self._wanted:
                self._resync_due = not first
                self._write_subscribe(list(self._wanted))
            first = False
            try:
                await self._read(reader, writer)
            except (OSError, TimeoutError, FanoutProtocolError) as exc:
                log.warning(
                    "fan-out: redis connection lost", fanout=self.name, error=_describe(exc)
                )
            finally:
                self.connected = False
                self._writer = None
                writer.close()
                self._reconnects.inc()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.url)
        async with asyncio.timeout(self._connect_timeout_s):
            if parts.scheme == "unix":
                reader, writer = await asyncio.open_unix_connection(parts.path, limit=READ_CHUNK)
            else:
                context = ssl.create_default_context() if parts.scheme == "rediss" else None
                reader, writer = await asyncio.open_connection(
                    parts.hostname or "127.0.0.1", parts.port or 6379, ssl=context, limit=READ_CHUNK
                )
            if parts.password is not None:
                auth = [b"AUTH"]
                if parts.username:
                    auth.append(unquote(parts.username).encode())
                auth.append(unquote(parts.password).encode())
                writer.write(command(*auth))
                parser = _new_parser()
                reply: Any = False
                while reply is False:
                    data = await reader.read(4096)
                    if not data:
                        raise FanoutProtocolError("redis closed the connection during AUTH")
                    parser.feed(data)
                    reply = parser.gets()
                if isinstance(reply, Exception):
                    writer.close()
                    raise FanoutProtocolError(f"redis AUTH failed: {reply}")
            # Named, so that an operator can tell it apart in CLIENT LIST (its +OK is ignored).
            writer.write(command(b"CLIENT", b"SETNAME", self.client_name.encode()))
        return reader, writer

    def _write_subscribe(self, channels: list[bytes]) -> None:
        if self._writer is None or not channels:
            return  # sent on (re)connect
        for channel in channels:
            self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
        self._writer.write(command(b"SUBSCRIBE", *channels))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = _new_parser()
        handle = self._handle
        ping_sent = False
        while True:
            try:
                async with asyncio.timeout(self._ping_interval_s):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                if ping_sent:
                    raise TimeoutError("no answer to PING") from None
                writer.write(command(b"PING"))
                ping_sent = True
                continue
            if not data:
                raise FanoutProtocolError("redis closed the connection")
            ping_sent = False
            parser.feed(data)
            reply = parser.gets()
            while reply is not False:
                handle(reply)
                reply = parser.gets()

    def _handle(self, reply: Any) -> None:
        if type(reply) is list and reply:
            kind = reply[0]
            if kind == b"message":
                channel = reply[1]
                key = self._keys.get(channel)
                if key is None:
                    return  # unsubscribed meanwhile
                self._frames_in.inc()
                try:
                    self._on_frame(key, reply[2])
                except Exception:
                    # A bug must not stop the fan-out of every other channel.
                    if self._bad_frames_logged < 20:
                        self._bad_frames_logged += 1
                        log.exception("fan-out: dispatch failed", fanout=self.name, key=key)
            elif kind == b"subscribe":
                self._confirmed(reply[1])
        elif isinstance(reply, Exception):
            log.warning("fan-out: redis error reply", fanout=self.name, error=str(reply))

    def _confirmed(self, channel: bytes) -> None:
        left = self._unconfirmed.get(channel, 0) - 1
        if left > 0:
            self._unconfirmed[channel] = left
            return
        self._unconfirmed.pop(channel, None)
        if channel in self._wanted:
            for waiter in self._waiters.pop(channel, []):
                if not waiter.done():
                    waiter.set_result(True)
        if self._resync_due and not self._unconfirmed:
            self._resync_due = False
            self._on_resync()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
