"""End to end: from a tick produced on Kafka to the in-app notification on the user's socket,
beside the same hops done bare (bench/alerts_floor.py), in the same run. Called by
bench/alerts.py (`make bench-alerts`); alone:

    uv run python bench/alerts_latency.py [--rate 100] [--duration 20] [--warmup 5]
        [--users 10] [--symbols 10]

Starts the backing servers and auth, charts, alerts, chat and the gateway as their own
processes (bench/ai.py's Platform; charts without its bundled history and its replayer, alerts
with its quota raised). Then:
- one tick per bench symbol (LAT00...), so that charts' feed makes each an instrument that rules
  may name; --users users register and open `WS /api/chat/connect`;
- rules through `POST /api/alerts`: per symbol one `price_above`, `once`, in_app rule per step
  of its coming price walk, half a cent under that step's price, the users taking turns; so
  every tick fires exactly one rule and the firing rate is the tick rate (--rate per second);
- the ticks (`aether.market.tick.v1`, as a feed sends them; the symbols take turns, each one's
  price a cent higher than its last) paced at --rate for --warmup + --duration seconds. A
  firing's latency: its tick's send (before the produce call) to its `notification` frame read
  on the socket, one clock; over the firings of the ticks sent after the warm-up.
The floor gets the same ticks (the MarketTick bytes, on its own topic), rules and pacing, its
clients on its own WebSocket server. Goal: the platform's p95 < 1 s at 100 firings/s; every
firing arrives once (lost and duplicated are counted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ai import Platform
from auth import cpu_seconds
from chat import RawHttp, machine_busy_seconds, new_user, percentile, pooled

BENCH = Path(__file__).resolve().parent
SERVICES = ("auth", "charts", "alerts", "chat", "gateway")
GOAL_P95_MS = 1000.0


@dataclass
class Plan:
    """The ticks and the rules they fire: tick i is symbol i % S at step i // S, and rule i is
    the one tick i fires."""

    symbols: list[str]
    users: int
    count: int

    def tick(self, i: int) -> tuple[str, float]:
        step = i // len(self.symbols)
        return self.symbols[i % len(self.symbols)], round(100 + 0.01 * (step + 1), 2)

    def rule(self, i: int) -> tuple[str, float, int]:
        """symbol, threshold, the user (index) owning it."""
        symbol, price = self.tick(i)
        return symbol, round(price - 0.005, 3), i % self.users


@dataclass
class Outcome:
    name: str
    latencies_ms: list[float]
    expected: int
    received: int
    duplicated: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.expected - self.received


class Receivers:
    """The users' sockets; every notification frame's rule id and arrival time."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.duplicated = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, url: str, headers: list[dict[str, str]]) -> None:
        sockets = [await connect(url, additional_headers=h, compression=None) for h in headers]
        for ws in sockets:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            self._tasks.append(asyncio.create_task(self._read(ws)))

    async def open_floor(self, port: int, users: int) -> None:
        sockets = [
            await connect(f"ws://127.0.0.1:{port}/?user=u{n}", compression=None)
            for n in range(users)
        ]
        for ws in sockets:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            self._tasks.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                now = time.perf_counter()
                frame = orjson.loads(raw)
                if frame.get("type") == "ping":
                    await ws.send('{"type": "pong"}')
                elif frame.get("type") == "notification":
                    if frame["rule_id"] in self.arrivals:
                        self.duplicated += 1
                    else:
                        self.arrivals[frame["rule_id"]] = now
        await ws.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def paced(count: int, rate: float, send: Callable[[int], Awaitable[None]]) -> list[float]:
    """send(i) for i in range(count) at `rate` per second; the time each send began."""
    sent = [0.0] * count
    start = time.perf_counter()
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[i] = time.perf_counter()
        await send(i)
    return sent


async def metered(
    pids: dict[str, int], run: Callable[[], Awaitable[list[float]]]
) -> tuple[list[float], dict[str, float]]:
    """run(), and the CPU each process and the whole machine used meanwhile (1 core = 100 %)."""
    start = {name: cpu_seconds(pid) for name, pid in pids.items()}
    busy, t0 = machine_busy_seconds(), time.perf_counter()
    result = await run()
    seconds = time.perf_counter() - t0
    cpu = {name: (cpu_seconds(pid) - start[name]) / seconds * 100 for name, pid in pids.items()}
    cpu["machine"] = (machine_busy_seconds() - busy) / seconds * 100
    return result, cpu


async def drain(receivers: Receivers, expected: int, quiet_s: float = 3.0) -> None:
    """Until every firing arrived, or nothing arrived for `quiet_s`."""
    last, seen = time.perf_counter(), -1
    while len(receivers.arrivals) < expected and time.perf_counter() - last < quiet_s:
        if len(receivers.arrivals) != seen:
            seen, last = len(receivers.arrivals), time.perf_counter()
        await asyncio.sleep(0.05)


def outcome(
    name: str,
    receivers: Receivers,
    rule_ids: list[str],
    sent: list[float],
    skip: int,
    cpu: dict[str, float],
) -> Outcome:
    latencies = sorted(
        (receivers.arrivals[rule_ids[i]] - sent[i]) * 1000
        for i in range(skip, len(rule_ids))
        if rule_ids[i] in receivers.arrivals
    )
    received = sum(1 for r in rule_ids if r in receivers.arrivals)
    return Outcome(
        name, latencies, len(rule_ids), received, receivers.duplicated, sent[-1] - sent[skip], cpu
    )


async def platform_run(platform: Platform, plan: Plan, rate: float, skip: int) -> Outcome:
    from google.protobuf import timestamp_pb2

    from aether.charts.v1 import events_pb2
    from aether_common.events import Event, EventProducer

    base = platform.gateway_url
    producer = EventProducer(platform.kafka_bootstrap, linger_ms=0, client_id="bench-feed")
    await producer.start()

    async def publish(symbol: str, price: float, n: int) -> None:
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(datetime.now(UTC))
        tick_id = f"bench:{symbol}:{n}"
        event = Event(
            type="aether.market.tick.v1",
            subject=symbol,
            payload=events_pb2.MarketTick(
                tick_id=tick_id, symbol=symbol, time=ts, price=price, size=1
            ),
            source="bench-feed",
            id=tick_id,
        )
        await producer.send_envelope(event.to_envelope())

    try:
        for n, symbol in enumerate(plan.symbols):  # charts makes each an instrument
            await publish(symbol, 100.0, -1 - n)
        await producer.flush()
        tokens = await pooled(plan.users, 4, base, lambda http, i: new_user(http, f"lat{i}"))

        async def known(http: RawHttp, i: int) -> None:
            deadline = time.monotonic() + 60
            path = f"/api/charts/{plan.symbols[i]}/quote"
            while (await http.request("GET", path, None, tokens[0]))[0] != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"charts never made {plan.symbols[i]} an instrument")
                await asyncio.sleep(0.2)

        await pooled(len(plan.symbols), 4, base, known)

        async def create(http: RawHttp, i: int) -> str:
            symbol, value, user = plan.rule(i)
            body = {
                "symbol": symbol,
                "condition": "price_above",
                "value": value,
                "frequency": "once",
                "channels": ["in_app"],
            }
            status, answer = await http.request("POST", "/api/alerts", body, tokens[user])
            if status != 201:
                raise RuntimeError(f"POST /api/alerts: {status} {answer}")
            rule_id: str = answer["id"]
            return rule_id

        t0 = time.perf_counter()
        rule_ids: list[str] = await pooled(plan.count, 8, base, create)
        print(f"  {plan.count:,} rules created in {time.perf_counter() - t0:.1f} s", flush=True)
        await asyncio.sleep(2.0)  # the engine picks rule changes up from NOTIFY

        receivers = Receivers()
        ws_url = base.replace("http://", "ws://", 1) + "/api/chat/connect"
        await receivers.open(ws_url, [{"Authorization": f"Bearer {t}"} for t in tokens])

        async def send(i: int) -> None:
            await publish(*plan.tick(i), i)

        pids = {name: platform.pid(name) for name in ("alerts", "gateway", "charts")}
        pids["bench"] = os.getpid()
        sent, cpu = await metered(pids, lambda: paced(plan.count, rate, send))
        await drain(receivers, plan.count)
        await receivers.close()
        return outcome("platform", receivers, rule_ids, sent, skip, cpu)
    finally:
        await producer.stop()


async def floor_run(
    platform: Platform, dsn: str, plan: Plan, rate: float, skip: int, fetch_wait_ms: int
) -> Outcome:
    from aiokafka import AIOKafkaProducer
    from google.protobuf import timestamp_pb2

    from aether.charts.v1 import events_pb2
    from aether_common.events.topics import TopicSpec, ensure_topics
    from aether_devstack.servers import free_port

    topic = "bench.floor.ticks"
    await ensure_topics(platform.kafka_bootstrap, [TopicSpec(topic, partitions=3)])
    rule_ids = [f"floor-{i}" for i in range(plan.count)]
    rules = [
        [rule_ids[i], f"u{plan.rule(i)[2]}", plan.rule(i)[0], plan.rule(i)[1]]
        for i in range(plan.count)
    ]
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(rules, f)
    server = subprocess.Popen(  # noqa: ASYNC220 (once, before the measured run)
        [sys.executable, str(BENCH / "alerts_floor.py"), str(port), platform.kafka_bootstrap,
         dsn, platform.redis_url, topic, f.name, str(fetch_wait_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap, linger_ms=0)
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 60)
        if line.strip() != "ready":
            raise RuntimeError(f"the floor server did not start: {line!r}")
        await producer.start()
        receivers = Receivers()
        await receivers.open_floor(port, plan.users)

        async def send(i: int) -> None:
            symbol, price = plan.tick(i)
            ts = timestamp_pb2.Timestamp()
            ts.FromDatetime(datetime.now(UTC))
            tick = events_pb2.MarketTick(
                tick_id=f"floor:{symbol}:{i}", symbol=symbol, time=ts, price=price, size=1
            )
            await producer.send(topic, tick.SerializeToString(), key=symbol.encode())

        pids = {"floor": server.pid, "bench": os.getpid()}
        sent, cpu = await metered(pids, lambda: paced(plan.count, rate, send))
        await drain(receivers, plan.count)
        await receivers.close()
        return outcome("floor (bare)", receivers, rule_ids, sent, skip, cpu)
    finally:
        await producer.stop()
        server.terminate()
        server.wait(10)
        os.unlink(f.name)


def report(results: list[Outcome], rate: float) -> bool:
    print(f"{'':16}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'fired/s':>9}"
          f"{'lost':>6}{'dup':>5}{'p95 vs floor':>14}")  # fmt: skip
    floor_p95 = percentile(results[-1].latencies_ms, 0.95)
    for r in results:
        lat = r.latencies_ms
        p95 = percentile(lat, 0.95)
        print(
            f"{r.name:16}{percentile(lat, 0.5):>9.1f}{p95:>9.1f}{percentile(lat, 0.99):>9.1f}"
            f"{(lat[-1] if lat else float('nan')):>9.1f}{len(lat) / r.seconds:>9.1f}"
            f"{r.lost:>6}{r.duplicated:>5}{p95 / floor_p95:>14.2f}"
        )
    cores = os.cpu_count() or 1
    for r in results:
        spent = ", ".join(f"{name} {value:.0f}%" for name, value in r.cpu.items())
        print(f"CPU while ticking, {r.name} (1 core = 100%, of {cores * 100}%): {spent}")
    platform = results[0]
    p95 = percentile(platform.latencies_ms, 0.95)
    met = p95 < GOAL_P95_MS and platform.lost == 0 and platform.duplicated == 0
    print(
        f"goal p95 < {GOAL_P95_MS:.0f} ms at {rate:g} firings/s, none lost or doubled: "
        f"{'met' if met else 'MISSED'}"
    )
    return met


async def run(
    rate: float, duration: float, warmup: float, users: int, symbols: int, fetch_wait_ms: int
) -> bool:
    plan = Plan([f"LAT{n:02d}" for n in range(symbols)], users, int(rate * (warmup + duration)))
    skip = int(rate * warmup)
    platform = Platform()
    env = {
        "charts": {"CHARTS_LOAD_BUNDLED": "false", "CHARTS_REPLAY_ENABLED": "false"},
        "alerts": {
            "ALERTS_QUOTA_FREE": str(plan.count),
            "ALERTS_FETCH_MAX_WAIT_MS": str(fetch_wait_ms),
        },
    }
    print(
        f"end to end: tick -> in-app notification, {rate:g} firings/s, {warmup:g} s warm-up +"
        f" {duration:g} s, {users} users, {symbols} symbols; Kafka fetch wait {fetch_wait_ms} ms",
        flush=True,
    )
    await asyncio.to_thread(platform.start, 1, services=SERVICES, service_env=env)
    try:
        dsn = await scratch_database(platform.postgres_dsn)
        results = [await platform_run(platform, plan, rate, skip)]
        results.append(await floor_run(platform, dsn, plan, rate, skip, fetch_wait_ms))
    finally:
        await asyncio.to_thread(platform.stop)
    return report(results, rate)


async def scratch_database(admin_dsn: str, name: str = "bench_alerts_floor") -> str:
    """A fresh database `name` on the platform's server; its DSN."""
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--fetch-wait-ms", type=int, default=500, help="ALERTS_FETCH_MAX_WAIT_MS")
    a = p.parse_args()
    met = asyncio.run(run(a.rate, a.duration, a.warmup, a.users, a.symbols, a.fetch_wait_ms))
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
