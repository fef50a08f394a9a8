"""Benchmark: chat over the gateway's WebSocket, end to end and fan-out only, beside the bare
Redis -> websockets fan-out ceiling measured in the same run on the same client processes.

    uv run python bench/chat.py [--clients N] [--rooms M] [--rate R] [--duration S]
        [--warmup W] [--client-procs P] [--clients-per-user K] [--steps 1,2,2.5,3,4,5,6,7]
        [--low-clients L] [--low-rate R0] [--phases e2e,floor,fanout,bare]   (make bench-chat)

Starts what it needs itself: the backing servers (aether_devstack NativeStack) and auth, chat and
the gateway as their own processes (aether_devstack Fleet), on free ports with fresh databases;
or uses AETHER_GATEWAY_URL when set (then that platform's rate limits and password hashing
apply, the fan-out phase is skipped, and the ceiling uses AETHER_REDIS_URL, default
redis://127.0.0.1:6379/0). For the run:
- auth hashes with cheaper argon2id (AUTH_ARGON2_TIME_COST=1, AUTH_ARGON2_MEMORY_KIB=8192, their
  minimums) so that registering thousands of bench users takes seconds; the measured path never
  hashes a password (a WebSocket connect verifies a JWT);
- the gateway's HTTP limits (GATEWAY_RATE_LIMIT_ANONYMOUS / _FREE) and per-connection frame
  limit (GATEWAY_CHAT_WS_RATE_FREE) are raised so that they do not cut the load.

Clients: N WebSockets on `WS /api/chat/connect`, one user each (K connections per user with
--clients-per-user K: registering 10,000 users takes minutes), in M public rooms (user u in room
u mod M), each subscribed to its room. Load generator: P processes (--client-procs), each one
uvloop event loop holding its share of the connections on `websockets`' Sans-I/O protocol
driven from an asyncio Protocol (compression off). Measured here, receiving 465-byte frames on
500 connections, parse included: ~12 us of CPU per frame, against ~21 us with its asyncio client
(futures, a queue and a reader task per connection); the load generator shares the 2 cores with
the gateway. Per received frame: one orjson parse, a seq appended, a latency computed from the
send time stamped in the content.

Runs, each W s of warm-up then S s measured, then a drain (until every ack is back and nothing
arrived for 1 s, at most --drain s):
- e2e: the clients send `send` frames (round-robin over their connections, so into every room):
  gateway -> chat (SendMessage: stored in MongoDB with the room's next seq, then published on
  Redis) -> every gateway subscriber -> the room's clients. First at low load: R0 frames/s
  (--low-rate, 5) with only L clients connected (--low-clients, 100); then with all N clients
  at R x each --steps multiplier. Each run also prints chat's and the gateway's own SendMessage
  histograms over the run (where a send's time goes) and MongoDB's operations per message
  (serverStatus opcounters: the send's transaction and the outbox relay's reads and marks);
- floor (a platform started here only): the floor of a send (bench/send_floor.py, its
  docstring lists the commands): a bare grpc.aio hop, chat's transaction done bare with
  pymongo, and chat's Redis round trip, on the platform's own servers, called at R0/s right
  after the low-load run;
- fanout (a platform started here only): the bench publishes message frames of the same shape
  and size as chat's on chat's own channels (`<CHAT_FANOUT_PREFIX>room:<id>`, seqs continuing
  from each room's last), at R x each --steps multiplier: Redis -> the gateway's hub (seq
  tracking, per-connection queues) -> clients, with chat's write path out of the way;
- bare: the same publishing, to a bare fan-out server of ours (one Python process, uvloop):
  redis-py subscribed to the M channels, a `websockets` server (compression off) sending each
  frame with `websockets.broadcast` to the room's connections. That is the ceiling: Redis
  pub/sub into one Python subscriber + one Python WebSocket server's fan-out + these clients on
  this machine, i.e. the gateway's delivery path without auth, membership checks, seq tracking,
  queues and ASGI/uvicorn.
Printed per run: deliveries/s (message frames received by all clients in the window / S) next
to the offered load (messages/s x clients per room); send -> receive latency p50/p95/p99 over
every delivery of the messages sent in the window (monotonic clock, one machine); send -> ack
latency (e2e); lost and duplicated, counted per client and (room, seq): every client must get
every acknowledged (e2e) or published (fanout, bare) message of its room exactly once; out of
order; errors; and the CPU each process used over the window (1 core = 100%), with `other`: the
rest of the machine's busy time (whatever else runs on it: figures taken while `other` is high
are not the platform's).

A step "holds" when it delivers >= 95 % of its offered load at p95 < 100 ms with nothing lost.
Goals on the 2-core development machine, at 2,000 clients: at low load, send -> ack p50 <= 3x
the floor of a send; the highest end-to-end step that holds >= 0.5 of the highest ceiling step
that holds (the steps must reach past the ceiling's limit for that to be its ratio to the
ceiling); at --rate, >= 10,000 deliveries/s at p95 < 100 ms; 0 lost, 0 duplicated, everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import math
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any, cast

import orjson

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"  # noqa: S105 (bench accounts)
RAISED_LIMIT = "1000000000"
ARGON2_BENCH = {"AUTH_ARGON2_TIME_COST": "1", "AUTH_ARGON2_MEMORY_KIB": "8192"}
GOAL_CLIENTS = 2000
GOAL_DELIVERIES = 10_000.0
GOAL_P95_MS = 100.0
GOAL_LOW_LOAD_RATIO = 3.0  # send->ack p50 at --low-rate <= this x the floor of a send
GOAL_HELD_RATIO = 0.5  # highest end-to-end rate held >= this x the bare ceiling's
CONNECT_CONCURRENCY = 64
TICK_S = 0.005


# -- small HTTP/1.1 client (setup only: register, login, join) -------------------------------------
class RawHttp:
    """One keep-alive HTTP/1.1 connection on asyncio streams (httpx costs ~8 ms of CPU per
    request here: registering thousands of users would measure httpx)."""

    def __init__(self, base_url: str) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port.rstrip("/") or 80)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        data = orjson.dumps(body) if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if method != "GET":
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        length, close = 0, False
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        raw = await self._reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, orjson.loads(raw) if raw else None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def checked(http: RawHttp, method: str, path: str, body: Any, token: str | None) -> Any:
    status, answer = await http.request(method, path, body, token)
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {answer}")
    return answer


async def new_user(http: RawHttp, tag: str) -> str:
    """Register + log in; the access token."""
    email = f"bench.{tag}.{secrets.token_hex(4)}@example.com"
    await checked(http, "POST", "/api/auth/register", {"email": email, "password": PASSWORD}, None)
    login = await checked(
        http, "POST", "/api/auth/login", {"email": email, "password": PASSWORD}, None
    )
    token: str = login["tokens"]["access_token"]
    return token


async def pooled(count: int, width: int, base_url: str, job: Callable[..., Any]) -> list[Any]:
    """`job(http, i)` for i in range(count) on `width` keep-alive connections."""
    results: list[Any] = [None] * count
    queue = iter(range(count))

    async def worker() -> None:
        http = RawHttp(base_url)
        try:
            for i in queue:
                results[i] = await job(http, i)
        finally:
            http.close()

    await asyncio.gather(*(worker() for _ in range(min(width, count))))
    return results


# -- the load generator: one process ---------------------------------------------------------------
@dataclass
class Client:
    """One WebSocket connection and what it received in the current run."""

    index: int
    room: int
    ws: WsConnection | None = None
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    seqs: array[int] = field(default_factory=lambda: array("q"))


class Run:
    """What one process records during one measured run (reset between runs)."""

    def __init__(self, t0: float, warmup: float, duration: float) -> None:
        self.window = (t0 + warmup, t0 + warmup + duration)
        self.deliveries = 0  # received inside the window
        self.latencies = array("d")  # deliveries of messages sent inside the window, seconds
        self.ack_latencies = array("d")
        self.pending: dict[str, float] = {}
        self.acked: list[tuple[int, int]] = []  # (room, seq)
        self.errors: Counter[str] = Counter()
        self.sent = 0
        self.last_message = time.monotonic()


PONG = orjson.dumps({"type": "pong"})
Data = bytes | bytearray | memoryview


class WsConnection(asyncio.Protocol):
    """A WebSocket client connection on `websockets`' Sans-I/O protocol, driven straight from
    an asyncio Protocol: each text frame is handed to `on_text` synchronously, without the
    per-message futures, queue and reader task of `websockets.asyncio` (~12 vs ~21 us of CPU
    per received frame here, see the module docstring). No compression offered; control
    frames (ping, close) are answered by the protocol."""

    def __init__(self, url: str, headers: dict[str, str], on_text: Callable[[Data], None]):
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.protocol = ClientProtocol(parse_uri(url), max_size=2**20)
        self.headers = headers
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._fragments: list[Data] | None = None

    @classmethod
    async def open(
        cls, url: str, headers: dict[str, str], on_text: Callable[[Data], None]
    ) -> WsConnection:
        from websockets.uri import parse_uri

        uri = parse_uri(url)
        conn = cls(url, headers, on_text)
        await asyncio.get_running_loop().create_connection(lambda: conn, uri.host, uri.port)
        await conn.opened
        return conn

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        request = self.protocol.connect()
        for name, value in self.headers.items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Response

        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if type(event) is Frame:
                opcode = event.opcode
                if opcode is Opcode.TEXT:
                    if event.fin:
                        self.on_text(event.data)
                    else:
                        self._fragments = [event.data]
                elif opcode is Opcode.CONT and self._fragments is not None:
                    self._fragments.append(event.data)
                    if event.fin:
                        self.on_text(b"".join(self._fragments))
                        self._fragments = None
            elif isinstance(event, Response) and not self.opened.done():
                if protocol.handshake_exc is not None:
                    self.opened.set_exception(protocol.handshake_exc)
                else:
                    self.opened.set_result(None)
        self._flush()

    def send_text(self, data: bytes) -> None:
        from websockets.protocol import State

        if self.protocol.state is State.OPEN:
            self.protocol.send_text(data)
            self._flush()

    def close(self) -> None:
        from websockets.protocol import State

        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        elif self.transport is not None and not self.closed.done():
            self.transport.close()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if self.protocol.close_expected():
            transport.close()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)


class LoadProcess:
    def __init__(self, index: int, pipe: Pipe, spec: dict[str, Any]) -> None:
        self.index = index
        self.pipe = pipe
        self.spec = spec
        self.clients: list[Client] = []
        self.run: Run | None = None
        self.room_ids: list[str] = spec["room_ids"]
        self.closes: Counter[str] = Counter()
        self.tokens: list[str] = []

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            command, arg = await loop.run_in_executor(None, self.pipe.recv)
            if command == "quit":
                await self.disconnect()
                return
            try:
                answer = await getattr(self, f"do_{command}")(arg)
            except Exception as exc:
                answer = {"failed": f"{type(exc).__name__}: {exc}"}
            self.pipe.send(answer)

    # -- setup -----------------------------------------------------------------------------------
    async def do_users(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Register this process's users and join each to its room (user u: room u mod M, its
        connections u*K .. u*K+K-1); the tokens are kept for connecting. Without an http_url
        (the bare ceiling only), just the same layout of clients and rooms."""
        users: list[int] = arg["users"]
        per_user, total = arg["per_user"], arg["clients"]
        rooms = len(self.room_ids)

        async def make(http: RawHttp, i: int) -> str:
            token = await new_user(http, f"{self.index}-{i}")
            path = f"/api/chat/rooms/{self.room_ids[users[i] % rooms]}/join"
            await checked(http, "POST", path, {}, token)
            return token

        if arg["http_url"]:
            tokens = await pooled(len(users), 16, arg["http_url"], make)
        else:
            tokens = [""] * len(users)
        self.clients, self.tokens = [], []
        for user, token in zip(users, tokens, strict=True):
            for c in range(user * per_user, min((user + 1) * per_user, total)):
                self.clients.append(Client(c, user % rooms))
                self.tokens.append(token)
        return {"users": len(users), "clients": len(self.clients)}

    async def do_connect(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Open every connection (to the gateway, or to the bare server) and subscribe."""
        await self.disconnect()
        url, gateway = arg["ws_url"], arg["gateway"]
        clients = self.clients[: arg.get("limit", len(self.clients))]
        for client in clients:
            client.synced = asyncio.Event()
        slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
        started = time.monotonic()

        async def open_one(i: int, client: Client) -> None:
            headers = {"Authorization": f"Bearer {self.tokens[i]}"} if gateway else {}
            async with slots, asyncio.timeout(120):
                client.ws = await WsConnection.open(
                    url, headers, lambda data: self.on_frame(client, data)
                )
                subscribe = {
                    "type": "subscribe",
                    "rooms": [{"room_id": self.room_ids[client.room]}],
                }
                client.ws.send_text(orjson.dumps(subscribe))
                await client.synced.wait()

        await asyncio.gather(*(open_one(i, c) for i, c in enumerate(clients)))
        # The connections live for the whole run: keep them out of the cyclic collector, whose
        # full passes over thousands of live connections would stall receiving (and show as
        # latency that is the load generator's, not the platform's). The gateway does the same.
        gc.freeze()
        return {"connected": len(clients), "seconds": time.monotonic() - started}

    async def do_disconnect(self, arg: dict[str, Any]) -> dict[str, Any]:
        await self.disconnect()
        return {}

    async def disconnect(self) -> None:
        opened = [c.ws for c in self.clients if c.ws is not None]
        for ws in opened:
            ws.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*(ws.closed for ws in opened), return_exceptions=True)
        for client in self.clients:
            client.ws = None

    # -- the hot path: called for every text frame received ----------------------------------------
    def on_frame(self, client: Client, data: Data) -> None:
        now = time.monotonic()
        frame = orjson.loads(data)
        kind = frame["type"]
        run = self.run
        if kind == "message":
            client.seqs.append(frame["seq"])
            if run is None:
                return
            run.last_message = now
            start, end = run.window
            if start <= now < end:
                run.deliveries += 1
            content = frame["message"]["content"]
            stamp = float(content[: content.index(" ")])
            if start <= stamp < end:
                run.latencies.append(now - stamp)
        elif kind == "ack":
            if run is not None:
                sent_at = run.pending.pop(frame["client_msg_id"], None)
                if sent_at is not None:
                    run.ack_latencies.append(now - sent_at)
                run.acked.append((client.room, frame["seq"]))
        elif kind == "synced":
            client.synced.set()
        elif kind == "ping":
            if client.ws is not None:
                client.ws.send_text(PONG)
        elif kind == "error":
            code = str(frame.get("code"))
            if run is not None:
                run.errors[code] += 1
                run.pending.pop(str(frame.get("client_msg_id")), None)
            else:
                self.closes[f"error {code}"] += 1

    async def do_run(self, arg: dict[str, Any]) -> dict[str, Any]:
        t0, warmup, duration = arg["t0"], arg["warmup"], arg["duration"]
        rate, drain = arg["rate"], arg["drain"]
        for client in self.clients:
            del client.seqs[:]
        run = self.run = Run(t0, warmup, duration)
        delay = t0 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        stop = t0 + warmup + duration
        if rate > 0 and self.clients:
            await self.send_loop(run, rate, t0, stop)
        else:
            await asyncio.sleep(max(0.0, stop - time.monotonic()))
        # Drain: every ack back, and quiet (no message for 1 s), at most `drain` s.
        give_up = time.monotonic() + drain
        while time.monotonic() < give_up:
            if not run.pending and time.monotonic() - run.last_message > 1.0:
                break
            await asyncio.sleep(0.05)
        self.run = None
        received = [(c.room, c.seqs.tobytes()) for c in self.clients if c.ws is not None]
        return {
            "deliveries": run.deliveries,
            "latencies": run.latencies.tobytes(),
            "ack_latencies": run.ack_latencies.tobytes(),
            "acked": run.acked,
            "unanswered": len(run.pending),
            "sent": run.sent,
            "errors": dict(run.errors),
            "received": received,
            "closes": dict(
                self.closes
                + Counter(
                    f"closed ({c.ws.close_code})"
                    for c in self.clients
                    if c.ws is not None and c.ws.closed.done()
                )
            ),
        }

    async def send_loop(self, run: Run, rate: float, t0: float, stop: float) -> None:
        """Open loop: R/P sends per second, round-robin over this process's connections."""
        clients = [c for c in self.clients if c.ws is not None]
        pad = "x" * max(0, self.spec["size"] - 40)
        room_ids = self.room_ids
        prefix = f"p{self.index}-{secrets.token_hex(4)}-"  # unique per run: not a retry
        dumps = orjson.dumps
        n = 0
        while True:
            now = time.monotonic()
            if now >= stop:
                return
            due = int((now - t0) * rate) - n
            for _ in range(due):
                client = clients[n % len(clients)]
                client_msg_id = f"{prefix}{n}"
                stamp = time.monotonic()
                frame = {
                    "type": "send",
                    "room_id": room_ids[client.room],
                    "client_msg_id": client_msg_id,
                    "content": f"{stamp:.6f} {pad}",
                }
                run.pending[client_msg_id] = stamp
                n += 1
                run.sent += 1
                ws = client.ws
                if ws is None or ws.closed.done():
                    run.errors["send on a closed connection"] += 1
                    run.pending.pop(client_msg_id, None)
                    continue
                ws.send_text(dumps(frame))
            await asyncio.sleep(TICK_S)


def load_process(index: int, pipe: Pipe, spec: dict[str, Any]) -> None:
    import uvloop

    uvloop.run(LoadProcess(index, pipe, spec).main())


class LoadGenerator:
    """P load processes, driven over pipes."""

    def __init__(self, procs: int, users: int, spec: dict[str, Any]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.procs: list[Any] = []
        self.share = [list(range(i, users, procs)) for i in range(procs)]
        for i in range(procs):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=load_process, args=(i, theirs, spec), daemon=True)
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)

    def call(self, command: str, args: list[Any]) -> list[dict[str, Any]]:
        for pipe, arg in zip(self.pipes, args, strict=True):
            pipe.send((command, arg))
        answers = [pipe.recv() for pipe in self.pipes]
        failed = [a["failed"] for a in answers if "failed" in a]
        if failed:
            raise RuntimeError(f"load process failed on {command}: {failed[0]}")
        return answers

    def all(self, command: str, arg: dict[str, Any]) -> list[dict[str, Any]]:
        return self.call(command, [arg] * len(self.pipes))

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("quit", None))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


# -- results ---------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * q))]


@dataclass
class Result:
    name: str
    offered: float  # deliveries/s the senders asked for
    deliveries: float
    latencies_ms: list[float]
    ack_ms: list[float]
    sent: int
    expected: int
    lost: int
    duplicated: int
    out_of_order: int
    unexpected: int
    errors: dict[str, int]
    cpu: dict[str, float]

    @property
    def p95(self) -> float:
        return percentile(self.latencies_ms, 0.95)

    def lines(self) -> list[str]:
        lat = self.latencies_ms
        out = [
            f"{self.name}",
            f"  deliveries/s {self.deliveries:10.0f}   (offered {self.offered:.0f}/s)",
            f"  send->receive p50 {percentile(lat, 0.5):7.1f} ms  p95 {self.p95:7.1f} ms  "
            f"p99 {percentile(lat, 0.99):7.1f} ms  max {max(lat, default=float('nan')):7.1f} ms"
            f"  ({len(lat)} deliveries of messages sent in the window)",
        ]
        if self.ack_ms:
            out.append(
                f"  send->ack     p50 {percentile(self.ack_ms, 0.5):7.1f} ms  "
                f"p95 {percentile(self.ack_ms, 0.95):7.1f} ms  ({len(self.ack_ms)} acks)"
            )
        out.append(
            f"  messages {self.sent}, deliveries expected {self.expected}: lost {self.lost}, "
            f"duplicated {self.duplicated}, out of order {self.out_of_order}, "
            f"not acknowledged but delivered {self.unexpected}"
        )
        if self.errors:
            out.append(f"  errors: {dict(sorted(self.errors.items()))}")
        if self.cpu:
            spent = ", ".join(f"{name} {share:.0%}" for name, share in self.cpu.items())
            out.append(f"  CPU over the window (1 core = 100%): {spent}")
        return out


def tally(
    name: str,
    answers: list[dict[str, Any]],
    duration: float,
    offered: float,
    published: dict[int, set[int]] | None,
    cpu: dict[str, float],
) -> Result:
    """Aggregate the processes' answers. Expected per client: every acknowledged seq of its room
    (gateway), or every published seq of it (ceiling: `published`)."""
    expected_by_room: dict[int, set[int]] = {}
    if published is None:
        for answer in answers:
            for room, seq in answer["acked"]:
                expected_by_room.setdefault(room, set()).add(seq)
    else:
        expected_by_room = published
    lost = duplicated = out_of_order = unexpected = expected = 0
    for answer in answers:
        for room, raw in answer["received"]:
            seqs = array("q")
            seqs.frombytes(raw)
            want = expected_by_room.get(room, set())
            got = set(seqs)
            expected += len(want)
            lost += len(want - got)
            unexpected += len(got - want)
            duplicated += len(seqs) - len(got)
            out_of_order += sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
    latencies: list[float] = []
    acks: list[float] = []
    errors: Counter[str] = Counter()
    for answer in answers:
        lat = array("d")
        lat.frombytes(answer["latencies"])
        latencies += [x * 1000 for x in lat]
        ack = array("d")
        ack.frombytes(answer["ack_latencies"])
        acks += [x * 1000 for x in ack]
        errors.update(answer["errors"])
        if answer["unanswered"]:
            errors["no ack within the drain"] += answer["unanswered"]
        errors.update({f"connections {k}": v for k, v in answer["closes"].items()})
    latencies.sort()
    acks.sort()
    return Result(
        name,
        offered,
        sum(a["deliveries"] for a in answers) / duration,
        latencies,
        acks,
        sum(a["sent"] for a in answers)
        if published is None
        else sum(len(seqs) for seqs in published.values()),
        expected,
        lost,
        duplicated,
        out_of_order,
        unexpected,
        dict(errors),
        cpu,
    )


# -- CPU -------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(quiet: float = 0.3, longest: float = 30.0) -> float:
    """Wait until the machine is quiet (busy < `quiet` of a core over a second): what the
    connects set off (presence, subscriptions) must not land in the first measured run."""
    began = time.monotonic()
    while time.monotonic() - began < longest:
        busy = machine_busy_seconds()
        time.sleep(1.0)
        if machine_busy_seconds() - busy < quiet:
            break
    return time.monotonic() - began


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (all cores; /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


async def measure_cpu(pids: dict[str, list[int]], start: float, seconds: float) -> dict[str, float]:
    """Share of one core each named group of processes used over [start, start + seconds], and
    `other`: the rest of the machine's busy time (this process, other users of the machine)."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    before = {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}
    machine = machine_busy_seconds()
    began = time.monotonic()
    await asyncio.sleep(seconds)
    spent = time.monotonic() - began
    shares = {
        name: (sum(cpu_seconds(p) for p in group) - before[name]) / spent
        for name, group in pids.items()
    }
    shares["other"] = max(0.0, (machine_busy_seconds() - machine) / spent - sum(shares.values()))
    return shares


def redis_pids() -> dict[str, list[int]]:
    """The machine's redis-server (shared with whatever else uses it), when it can be seen."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "redis-server":
                    pids.append(int(entry.name))
    return {"redis": pids} if pids else {}


# -- the platform ----------------------------------------------------------------------------------
class Platform:
    """Servers + auth, chat and gateway started here, or the external AETHER_GATEWAY_URL."""

    def __init__(self) -> None:
        self.external = os.environ.get("AETHER_GATEWAY_URL", "").rstrip("/") or None
        self.gateway_url = self.external or ""
        self.redis_url = os.environ.get("AETHER_REDIS_URL", "redis://127.0.0.1:6379/0")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stack: Any = None
        self._fleet: Any = None
        self.endpoints: Any = None
        # Where chat publishes (known only for a platform started here).
        self.fanout_prefix: str | None = None

    def start(self) -> None:
        if self.external:
            return
        from aether_devstack.fleet import Fleet
        from aether_devstack.servers import NativeStack

        self._tmp = tempfile.TemporaryDirectory(prefix="aether-bench-", ignore_cleanup_errors=True)
        data = Path(self._tmp.name)
        self._stack = NativeStack(data / "servers")
        endpoints = self.endpoints = self._stack.start()
        self.redis_url = endpoints.redis_url
        run = secrets.token_hex(4)
        fanout = self.fanout_prefix = f"bench{run}:chat:fanout:"
        quiet = {"AETHER_LOG_LEVEL": "WARNING"}
        extra = {
            "auth": quiet | ARGON2_BENCH | {"AUTH_REDIS_PREFIX": f"bench{run}:auth:"},
            "chat": quiet
            | {"CHAT_FANOUT_PREFIX": fanout, "CHAT_REDIS_PREFIX": f"bench{run}:chat:"},
            "gateway": quiet
            | {
                "GATEWAY_REDIS_KEY_PREFIX": f"bench{run}:gateway:",
                "GATEWAY_REVOCATION_KEY_PREFIX": f"bench{run}:auth:revoked:",
                "GATEWAY_RATE_LIMIT_ANONYMOUS": RAISED_LIMIT,
                "GATEWAY_RATE_LIMIT_FREE": RAISED_LIMIT,
                "GATEWAY_CHAT_WS_RATE_FREE": RAISED_LIMIT,
                "GATEWAY_CHAT_FANOUT_PREFIX": fanout,
            },
        }
        (data / "logs").mkdir()
        self._fleet = Fleet(
            endpoints, ROOT, data / "logs", extra_env=extra, only=["auth", "chat", "gateway"]
        )
        self._fleet.start()
        self.gateway_url = self._fleet.http_url("gateway")

    def send_histograms(self) -> dict[str, dict[float, float]]:
        """SendMessage's latency histograms now (cumulative buckets): as chat served it and as
        the gateway saw it (empty for an external platform)."""
        if self._fleet is None:
            return {}
        return {
            "chat serving SendMessage": scrape_buckets(
                self._fleet.http_url("chat"), "aether_grpc_server_handling_seconds_bucket"
            ),
            "gateway calling SendMessage": scrape_buckets(
                self._fleet.http_url("gateway"), "aether_grpc_client_handling_seconds_bucket"
            ),
        }

    def mongo_ops(self) -> dict[str, int]:
        """MongoDB's operation counters now (serverStatus opcounters; empty if external)."""
        if self.endpoints is None:
            return {}
        from pymongo import MongoClient

        with MongoClient(self.endpoints.mongo_url) as client:
            counters = client.admin.command("serverStatus")["opcounters"]
        return {name: int(count) for name, count in counters.items()}

    def pids(self) -> dict[str, list[int]]:
        if self._fleet is None:
            return {}
        pids: dict[str, list[int]] = {}
        for name in ("gateway", "chat", "auth"):
            proc = self._fleet.process(name).proc
            if proc is not None:
                pids[name] = [proc.pid]
        mongo = self._stack.servers.get("mongo") if self._stack is not None else None
        if mongo is not None and mongo.proc is not None:
            pids["mongo"] = [mongo.proc.pid]
        return pids

    def stop(self) -> None:
        if self._fleet is not None:
            self._fleet.stop()
        if self._stack is not None:
            self._stack.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def scrape_buckets(base_url: str, metric: str) -> dict[float, float]:
    """The cumulative buckets (upper bound s -> count) of `metric` for SendMessage."""
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(metric + "{") and "/SendMessage" in line:
            labels, _, value = line.rpartition(" ")
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            buckets[math.inf if bound == "+Inf" else float(bound)] = float(value)
    return buckets


def ops_lines(before: dict[str, int], after: dict[str, int], answers: list[Any]) -> list[str]:
    """MongoDB operations per message sent over the whole run (warm-up and drain included:
    everything chat did for those messages, its outbox relay's reads and marks too)."""
    sent = sum(a["sent"] for a in answers)
    if not after or not sent:
        return []
    spent = {name: after[name] - before.get(name, 0) for name in after}
    per = ", ".join(f"{name} {count / sent:.1f}" for name, count in spent.items() if count)
    total = sum(spent.values()) / sent
    return [f"  MongoDB operations per message sent: {per} (total {total:.1f})"]


def bucket_of(window: dict[float, float], count: float) -> str:
    le = next(b for b in sorted(window) if window[b] >= count)
    return "> 10 s" if le == math.inf else f"<= {le * 1000:g} ms"


def histogram_lines(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> list[str]:
    """Where a send's time goes, from the services' own histograms over the run: the bucket
    that holds the p50 and the p95 (an upper bound: the buckets are coarse)."""
    lines = []
    for name, now in after.items():
        window = {le: count - before.get(name, {}).get(le, 0.0) for le, count in now.items()}
        total = window.get(math.inf, 0.0)
        if not total:
            continue
        p50, p95 = (bucket_of(window, q * total) for q in (0.5, 0.95))
        lines.append(f"  {name}: p50 {p50}  p95 {p95}  ({total:.0f} calls)")
    return lines


# -- the ceiling: bare Redis -> websockets fan-out -------------------------------------------------
def serve_bare(port: int, redis_url: str, channel_prefix: str, rooms: list[str]) -> None:
    """The bare fan-out server (its own process): redis-py pub/sub on the rooms' channels,
    `websockets.broadcast` of each frame to the room's connections."""
    import uvloop
    from redis.asyncio import Redis
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    members: dict[str, set[ServerConnection]] = {room: set() for room in rooms}

    async def handler(ws: ServerConnection) -> None:
        first = orjson.loads(await ws.recv())
        room = first["rooms"][0]["room_id"]
        members[room].add(ws)
        try:
            await ws.send(orjson.dumps({"type": "synced", "room_id": room, "last_seq": 0}).decode())
            async for _ in ws:  # pongs and the like: read and dropped
                pass
        finally:
            members[room].discard(ws)

    async def main() -> None:
        redis = Redis.from_url(redis_url)
        pubsub = redis.pubsub()
        await pubsub.subscribe(*(channel_prefix + room for room in rooms))
        cut = len(channel_prefix)
        async with serve(
            handler, "127.0.0.1", port, compression=None, ping_interval=None, max_size=2**20
        ):
            print("ready", flush=True)
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                room = message["channel"][cut:].decode()
                broadcast(members[room], message["data"].decode())

    uvloop.run(main())


async def publish_load(
    redis_url: str,
    channel_prefix: str,
    room_ids: list[str],
    rate: float,
    t0: float,
    stop: float,
    size: int,
    last: dict[int, int],
) -> dict[int, set[int]]:
    """Message frames shaped like chat's, stamped like the end-to-end run's, at `rate`/s over
    the rooms, each room's seq going on from `last` (updated); room -> the seqs published."""
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    pad = "x" * max(0, size - 40)
    first = {room: last.get(room, 0) for room in range(len(room_ids))}
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    n = 0
    try:
        while True:
            now = time.monotonic()
            if now >= stop:
                return {room: set(range(first[room] + 1, last[room] + 1)) for room in first}
            due = int((now - t0) * rate) - n
            if due > 0:
                pipe = redis.pipeline(transaction=False)
                for _ in range(due):
                    room = n % len(room_ids)
                    n += 1
                    last[room] = last.get(room, 0) + 1
                    seq = last[room]
                    room_id = room_ids[room]
                    frame = {
                        "type": "message",
                        "room_id": room_id,
                        "seq": seq,
                        "message": {
                            "message_id": f"bench-{room}-{seq}",
                            "room_id": room_id,
                            "seq": seq,
                            "sender_id": "0" * 26,
                            "client_msg_id": f"bench-{n}",
                            "content": f"{time.monotonic():.6f} {pad}",
                            "mentions": [],
                            "reply_to_seq": 0,
                            "created_at": "2025-01-01T00:00:00.000Z",
                            "edited_at": None,
                            "deleted": False,
                        },
                    }
                    pipe.publish(channel_prefix + room_id, orjson.dumps(frame))
                await pipe.execute()
            await asyncio.sleep(TICK_S)
    finally:
        await redis.aclose()


# -- the floor of a send (send_floor.py) ----------------------------------------------------------
def measure_floor(platform: Platform, args: argparse.Namespace) -> list[float]:
    """bench/send_floor.py's server on the platform's MongoDB and Redis, called at --low-rate
    for --duration s: each send's latency (ms), printed with the commands it issues."""
    import subprocess

    from aether_devstack.servers import free_port

    sys.path.insert(0, str(Path(__file__).parent))
    import send_floor

    port = free_port()
    database = f"bench_floor_{secrets.token_hex(4)}"
    script = str(Path(__file__).with_name("send_floor.py"))
    argv = [sys.executable, script, str(port), platform.endpoints.mongo_url, database]
    proc = subprocess.Popen([*argv, platform.redis_url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("send_floor.py did not start")
        target = f"127.0.0.1:{port}"
        latencies = sorted(
            asyncio.run(send_floor.paced_sends(target, args.low_rate, args.duration, args.size))
        )
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"floor of a send at {args.low_rate:g}/s (bench/send_floor.py), one send issues:")
    for command in send_floor.SEND_COMMANDS:
        print(f"    {command}")
    print(
        f"  bare gRPC hop + that transaction + that Redis round trip: p50 "
        f"{percentile(latencies, 0.5):.1f} ms  p95 {percentile(latencies, 0.95):.1f} ms  "
        f"({len(latencies)} sends)"
    )
    return latencies


# -- main ------------------------------------------------------------------------------------------
def connect(gen: LoadGenerator, base: str, clients: int) -> int:
    """(Re)connect the first `clients` connections (spread over the processes and rooms),
    then wait until the machine is quiet: the number connected."""
    per_process = math.ceil(clients / len(gen.pipes))
    connected = gen.all("connect", {"ws_url": ws_url(base), "gateway": True, "limit": per_process})
    count = sum(c["connected"] for c in connected)
    print(
        f"connected and subscribed: {count} WebSockets in "
        f"{max(c['seconds'] for c in connected):.1f} s; machine quiet again after "
        f"{settle():.1f} s"
    )
    return count


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1) + "/api/chat/connect"


def timed_run(
    gen: LoadGenerator,
    args: argparse.Namespace,
    rate_per_proc: float,
    pids: dict[str, list[int]],
    publisher: Callable[[float, float], Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float], Any]:
    """One warm-up + measured window on every load process (and the publisher, if any)."""
    t0 = time.monotonic() + 1.0
    arg = {
        "t0": t0,
        "warmup": args.warmup,
        "duration": args.duration,
        "rate": rate_per_proc,
        "drain": args.drain,
    }
    for pipe in gen.pipes:
        pipe.send(("run", arg))

    async def side() -> tuple[dict[str, float], Any]:
        cpu = asyncio.create_task(measure_cpu(pids, t0 + args.warmup, args.duration))
        published = None
        if publisher is not None:
            published = await publisher(t0, t0 + args.warmup + args.duration)
        return await cpu, published

    cpu, published = asyncio.run(side())
    answers = [pipe.recv() for pipe in gen.pipes]
    failed = [a["failed"] for a in answers if "failed" in a]
    if failed:
        raise RuntimeError(f"load process failed on run: {failed[0]}")
    return answers, cpu, published


def start_bare(redis_url: str, prefix: str, room_ids: list[str]) -> tuple[Any, int]:
    import subprocess

    from aether_devstack.servers import free_port

    port = free_port()
    argv = [sys.executable, __file__, "--serve-bare", str(port), redis_url, prefix]
    proc = subprocess.Popen([*argv, ",".join(room_ids)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the bare fan-out server did not start")
    return proc, port


async def make_rooms(base: str, count: int) -> tuple[str, list[str]]:
    """One owner creates `count` public rooms: (the owner's token, the room ids)."""
    http = RawHttp(base)
    try:
        owner = await new_user(http, "owner")
        # A service answers /healthz (all Fleet waits for) before its gRPC server is up: chat
        # may still answer 503 for a few seconds after the platform "started".
        deadline = time.monotonic() + 90
        while True:
            status, _ = await http.request("GET", "/api/chat/rooms", None, owner)
            if status != 503 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        ids = []
        for m in range(count):
            body = {"name": f"bench {m}", "visibility": "public"}
            room = await checked(http, "POST", "/api/chat/room", body, owner)
            ids.append(room["room_id"])
        return owner, ids
    finally:
        http.close()


async def last_seqs(base: str, token: str, room_ids: list[str]) -> dict[int, int]:
    """Each room's last seq (GET /api/chat/history?limit=1)."""
    http = RawHttp(base)
    try:
        last = {}
        for i, room_id in enumerate(room_ids):
            page = await checked(
                http, "GET", f"/api/chat/history?room_id={room_id}&limit=1", None, token
            )
            last[i] = int(page["last_seq"])
        return last
    finally:
        http.close()


PHASES = ("e2e", "floor", "fanout", "bare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="WebSocket clients (<= 10000)")
    parser.add_argument("--rooms", type=int, default=5, help="rooms (clients spread evenly)")
    parser.add_argument("--rate", type=float, default=30.0, help="messages sent per second")
    parser.add_argument(
        "--low-clients", type=int, default=100, help="clients connected in the low-load run"
    )
    parser.add_argument(
        "--low-rate",
        type=float,
        default=5.0,
        help="messages/s of the low-load end-to-end run and of the floor of a send",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--drain", type=float, default=15.0, help="max seconds to drain")
    parser.add_argument("--size", type=int, default=100, help="message content bytes")
    parser.add_argument("--client-procs", type=int, default=2, help="load-generator processes")
    parser.add_argument(
        "--clients-per-user", type=int, default=1, help="connections sharing one user"
    )
    parser.add_argument(
        "--steps",
        default="1,2,2.5,3,4,5,6,7",
        help="end-to-end, fan-out and ceiling runs at these multiples of --rate",
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="which of e2e (through chat), fanout (gateway only), bare (ceiling) to run",
    )
    parser.add_argument("--serve-bare", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        port, redis_url, prefix, rooms = args.serve_bare
        serve_bare(int(port), redis_url, prefix, rooms.split(","))
        return
    if not 1 <= args.clients <= 10_000:
        parser.error("--clients must be 1..10000")
    if not 1 <= args.rooms <= args.clients:
        parser.error("--rooms must be 1..clients")
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if not phases <= set(PHASES):
        parser.error(f"--phases: choose among {', '.join(PHASES)}")
    steps = [float(s) for s in args.steps.split(",") if s.strip()]

    started = time.perf_counter()
    cores = os.cpu_count() or 1
    procs = max(1, min(args.client_procs, args.clients))
    users = math.ceil(args.clients / args.clients_per_user)
    per_room = args.clients / args.rooms
    platform = Platform()
    gen: LoadGenerator | None = None
    bare: Any = None
    low: Result | None = None
    e2e: list[Result] = []
    floor: list[float] = []
    fanout: list[Result] = []
    ceiling: list[Result] = []
    needs_platform = bool(phases & {"e2e", "fanout"})
    base = ""
    try:
        if needs_platform:
            platform.start()
            base = platform.gateway_url
            print(f"gateway {base}" + (" (external)" if platform.external else ""))
            if not platform.external:
                print(
                    "started here: servers (NativeStack), auth + chat + gateway (Fleet); auth "
                    "hashes with argon2id t=1, m=8 MiB for the run (AUTH_ARGON2_TIME_COST / "
                    "_MEMORY_KIB, their minimums; bench users only); gateway limits raised "
                    "(GATEWAY_RATE_LIMIT_ANONYMOUS, _FREE, GATEWAY_CHAT_WS_RATE_FREE = "
                    f"{RAISED_LIMIT})"
                )
            owner, room_ids = asyncio.run(make_rooms(base, args.rooms))
        else:
            owner, room_ids = "", [f"bare-{i}" for i in range(args.rooms)]
        print(
            f"cores: {cores}, shared by everything (servers, services, {procs} load processes, "
            f"the ceiling server, and whatever else runs on the machine: see 'other'); "
            f"{args.clients} clients in {args.rooms} rooms ({per_room:.0f} per room); "
            f"{args.warmup:g} s warm-up + {args.duration:g} s measured per run"
        )
        gen = LoadGenerator(procs, users, {"room_ids": room_ids, "size": args.size})
        began = time.monotonic()
        gen.call(
            "users",
            [
                {
                    "users": share,
                    "per_user": args.clients_per_user,
                    "clients": args.clients,
                    "http_url": base if needs_platform else None,
                }
                for share in gen.share
            ],
        )
        if needs_platform:
            print(
                f"{users} users registered and joined in {time.monotonic() - began:.1f} s "
                f"({args.clients_per_user} connection(s) per user)"
            )
            pids = platform.pids() | {"load generator": gen.pids()} | redis_pids()

            def e2e_run(rate: float, connected: int) -> Result:
                before, ops = platform.send_histograms(), platform.mongo_ops()
                answers, cpu, _ = timed_run(gen, args, rate / procs, pids)
                inside = histogram_lines(before, platform.send_histograms())
                inside += ops_lines(ops, platform.mongo_ops(), answers)
                result = tally(
                    f"end to end: {rate:g} send frames/s, {connected} clients -> gateway -> "
                    "chat (store, publish) -> Redis -> gateway -> clients",
                    answers,
                    args.duration,
                    rate * connected / args.rooms,
                    None,
                    cpu,
                )
                print("\n".join(result.lines() + inside))
                return result

            if phases & {"e2e", "floor"}:
                # Low load first, on the first --low-clients connections only.
                few = connect(gen, base, min(args.low_clients, args.clients))
                if "e2e" in phases:
                    low = e2e_run(args.low_rate, few)
                if "floor" in phases and platform.endpoints is not None:
                    floor = measure_floor(platform, args)
            connect(gen, base, args.clients)
            if "e2e" in phases:
                e2e = [e2e_run(args.rate * step, args.clients) for step in steps or [1.0]]
            if "fanout" in phases and platform.fanout_prefix:
                last = asyncio.run(last_seqs(base, owner, room_ids))
                channels = platform.fanout_prefix + "room:"
                for step in steps:
                    result = publish_run(
                        gen, args, pids, platform.redis_url, channels, room_ids, step, last
                    )
                    result.name = (
                        f"gateway fan-out x{step:g}: {args.rate * step:g} frames/s published "
                        "on chat's channels -> Redis -> gateway -> clients (chat bypassed)"
                    )
                    fanout.append(result)
                    print("\n".join(result.lines()))
            gen.all("disconnect", {})

        if "bare" in phases and steps:
            prefix = f"benchbare{secrets.token_hex(4)}:room:"
            bare, port = start_bare(platform.redis_url, prefix, room_ids)
            gen.all("connect", {"ws_url": f"ws://127.0.0.1:{port}/", "gateway": False})
            bare_pids = {"bare server": [bare.pid], "load generator": gen.pids()} | redis_pids()
            last = {}
            for step in steps:
                result = publish_run(
                    gen, args, bare_pids, platform.redis_url, prefix, room_ids, step, last
                )
                result.name = (
                    f"ceiling x{step:g}: {args.rate * step:g} frames/s published -> Redis -> "
                    "one bare Python subscriber, websockets.broadcast -> clients"
                )
                ceiling.append(result)
                print("\n".join(result.lines()))
    finally:
        if gen is not None:
            gen.stop()
        if bare is not None:
            bare.terminate()
            bare.wait(10)
        platform.stop()

    report(args, low, floor, e2e, fanout, ceiling)
    print(f"\ntotal run {time.perf_counter() - started:.0f} s")


def publish_run(
    gen: LoadGenerator,
    args: argparse.Namespace,
    pids: dict[str, list[int]],
    redis_url: str,
    channel_prefix: str,
    room_ids: list[str],
    step: float,
    last: dict[int, int],
) -> Result:
    """One run with the bench publishing chat-shaped frames (no client sends)."""
    rate = args.rate * step

    def publisher(t0: float, stop: float) -> Any:
        return publish_load(redis_url, channel_prefix, room_ids, rate, t0, stop, args.size, last)

    answers, cpu, published = timed_run(gen, args, 0.0, pids, publisher)
    per_room = args.clients / args.rooms
    return tally("", answers, args.duration, rate * per_room, published, cpu)


def holds(result: Result) -> bool:
    return (
        result.deliveries >= 0.95 * result.offered
        and result.p95 < GOAL_P95_MS
        and result.lost == 0
        and result.duplicated == 0
    )


def highest_held(results: list[Result]) -> float:
    """The highest delivery rate among the runs that held (0 when none did)."""
    return max((r.deliveries for r in results if holds(r)), default=0.0)


def report(
    args: argparse.Namespace,
    low: Result | None,
    floor: list[float],
    e2e: list[Result],
    fanout: list[Result],
    ceiling: list[Result],
) -> None:
    def verdict(ok: bool) -> str:
        return "ok" if ok else "BELOW GOAL"

    print("\n== summary ==")
    if low is not None and floor and low.ack_ms:
        ack, bare = percentile(low.ack_ms, 0.5), percentile(floor, 0.5)
        print(
            f"low load ({args.low_rate:g} msg/s): send->ack p50 {ack:.1f} ms, floor of a send "
            f"p50 {bare:.1f} ms: {ack / bare:.2f}x  (goal <= {GOAL_LOW_LOAD_RATIO:g}x)   "
            f"{verdict(ack <= GOAL_LOW_LOAD_RATIO * bare)}"
        )
    if e2e:
        first = e2e[0]
        at_goal = args.clients >= GOAL_CLIENTS
        note = "" if at_goal else f"; the goal is set at {GOAL_CLIENTS} clients, this run has fewer"
        print(
            f"end to end at {args.rate:g} msg/s: {first.deliveries:.0f} deliveries/s (goal >= "
            f"{GOAL_DELIVERIES:.0f}{note})   "
            f"{verdict(first.deliveries >= GOAL_DELIVERIES) if at_goal else 'n/a'}; p95 "
            f"{first.p95:.1f} ms (goal < {GOAL_P95_MS:.0f})   {verdict(first.p95 < GOAL_P95_MS)}"
        )
        lost = sum(r.lost for r in [*e2e, *([low] if low else [])])
        duplicated = sum(r.duplicated for r in [*e2e, *([low] if low else [])])
        print(
            f"end to end lost {lost}, duplicated {duplicated} over every run  (goal 0 and 0)   "
            f"{verdict(lost == 0 and duplicated == 0)}"
        )
    for name, results in (
        ("end to end", e2e),
        ("gateway fan-out", fanout),
        ("bare ceiling", ceiling),
    ):
        if not results:
            continue
        steps = "  ".join(
            f"{r.offered:.0f}/s: {r.deliveries:.0f} p95 {r.p95:.0f} ms"
            f"{'' if holds(r) else ' (did not hold)'}"
            for r in results
        )
        print(f"{name:<16} {steps}")
        best = highest_held(results)
        print(
            f"{'':<16} highest that held (>= 95% delivered, p95 < 100 ms, 0 lost): "
            + (f"{best:.0f} deliveries/s" if best else "none")
        )
    if e2e and ceiling:
        ours, bare_best = highest_held(e2e), highest_held(ceiling)
        ratio = ours / bare_best if bare_best else 0.0
        print(
            f"end to end / bare ceiling, highest rate that held: {ours:.0f} / {bare_best:.0f} = "
            f"{ratio:.2f}  (goal >= {GOAL_HELD_RATIO:g}; the ceiling's steps must reach past "
            f"its limit for this to be a ratio to it)   {verdict(ratio >= GOAL_HELD_RATIO)}"
        )
    if fanout and ceiling:
        pairs = "  ".join(
            f"{f.offered:.0f}/s: {f.deliveries / c.deliveries:.2f}"
            for f, c in zip(fanout, ceiling, strict=False)
            if c.deliveries
        )
        print(f"gateway fan-out / bare ceiling, deliveries at each offered load: {pairs}")


if __name__ == "__main__":
    main()
