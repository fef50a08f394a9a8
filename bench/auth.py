"""Benchmark: auth through the gateway (password logins/s, refreshes/s) and the gateway's overhead.

    uv run python bench/auth.py [--concurrency N] [--duration S] [--client-procs P] [--py-spy DIR]

Starts what it needs itself: the backing servers (aether_devstack NativeStack, with a Redis
server of the run's own when redis-server is installed, so that the Redis commands counted are
the run's) and every declared service as its own process (aether_devstack Fleet: auth, gateway),
on free ports with fresh databases; or uses AETHER_GATEWAY_URL when set (then the gateway's own
rate limits apply, and neither the uncached-/me gateway nor its floor is started). For the run
the gateway's rate limits are raised through its env (GATEWAY_RATE_LIMIT_ANONYMOUS / _FREE) so
they do not cut the load.

Phases, each a warm-up then S seconds of N concurrent requests. Load generator: N keep-alive
HTTP/1.1 connections on asyncio streams in this process (RawHttp; --client-procs P splits the
GET phases over P processes); httpx (used for setup) costs ~8 ms CPU per request at this
concurrency here and would measure itself rather than the servers:
- logins: POST /api/auth/login (argon2id verification in auth, parameters printed);
- refreshes: POST /api/auth/refresh, each client following its own rotating refresh token;
- GET /api/auth/me through gateway -> gRPC -> auth: cached (the gateway keeps /me 10 minutes in
  Redis) and uncached (a second gateway process with GATEWAY_PROFILE_CACHE_TTL_S=0, so every
  request is a GetMe RPC), plus GET /api/auth/me/export (always an RPC);
- the same /me JSON from a bare FastAPI app under uvicorn on this machine (one process, same
  uvicorn settings as the services), in the same run: the ratio gateway / bare is printed;
- the floor of the uncached /me (me_floor.py): a bare FastAPI route doing the gateway's Redis
  work and token verification, calling a bare grpc.aio servicer that verifies the forwarded
  token as auth does and runs auth's Redis read and PostgreSQL transaction; it must answer the
  gateway's JSON. Printed beside the uncached gateway: CPU per request of each side (gateway vs
  the floor's HTTP side, auth vs its gRPC side), Redis commands per request (INFO commandstats)
  and PostgreSQL work per request in auth's database (pg_stat_user_tables scans of the tables
  GetMe reads, pg_stat_database commits; read 11 s after the load stops, as PostgreSQL flushes
  them late), and `gateway uncached / its floor: 0.NN`. --py-spy DIR profiles both pairs.

Goals: >= 30 logins/s and >= 240 refreshes/s per core; gateway path >= 0.5 of the bare app's
requests/s; the uncached gateway >= 0.7 of its floor. Everything (servers, services, load
generator) shares this machine's cores, so the figures are the whole platform's on those cores,
printed beside them. Logins and refreshes are also printed per second of the auth process's own
CPU (read from /proc over the measured window), which is how Keycloak's sizing counts (vCPUs of
Keycloak, the database apart), with the CPU each of auth and the gateway spent per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import multiprocessing
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"  # noqa: S105 (bench accounts)
RAISED_LIMIT = "1000000000"


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    # CPU seconds each process (auth, gateway) spent in the measured window, when known.
    cpu_s: dict[str, float] | None = None
    # Every request the phase sent, warm-up and errors included (what datastore counts divide).
    sent: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def cpu_line(self) -> str:
        return ", ".join(
            f"{proc} {1000 * seconds / max(1, self.requests):.2f} ms"
            for proc, seconds in (self.cpu_s or {}).items()
        )

    def line(self) -> str:
        lat = sorted(self.latencies_ms) or [0.0]
        p50 = statistics.median(lat)
        p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
        errors = f", {self.errors} errors" if self.errors else ""
        return (
            f"{self.name:<44} {self.rate:9.1f} req/s   p50 {p50:7.1f} ms   p95 {p95:7.1f} ms"
            f"   ({self.requests} in {self.seconds:.1f} s{errors})"
        )


# -- load ----------------------------------------------------------------------------------------
class RawHttp:
    """One keep-alive HTTP/1.1 connection on asyncio streams: the load generator's client.

    httpx's AsyncClient spends ~8 ms of CPU per request at concurrency 32 on this kind of
    machine (~130 req/s from one process, whatever the server): it would measure itself, not
    the server. This does only what the phases need (Content-Length bodies, no redirects).
    """

    def __init__(self, base_url: str) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port.rstrip("/") or 80)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body or method != "GET":
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        length, close = 0, False
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        data = await self._reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


Step = Callable[[RawHttp, int], Awaitable[bool]]
# (ok, errors, seconds measured, latencies ms, sent: every request, warm-up and errors included)
Drive = tuple[int, int, float, list[float], int]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of named processes over the measured window of a phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start: dict[str, float] = {}
        self.spent: dict[str, float] = {}

    def begin(self) -> None:
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def end(self) -> None:
        self.spent = {n: cpu_seconds(pid) - self.start[n] for n, pid in self.pids.items()}


async def drive(
    base_url: str,
    step: Step,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    cpu: CpuMeter | None = None,
) -> Drive:
    """`concurrency` loops, each on its own connection, calling `step(conn, worker)` until the
    time is up; counts after the warm-up only. Returns (ok, errors, seconds, latencies ms, sent):
    `sent` counts every request, warm-up and errors included."""

    async def meter() -> None:
        if cpu is not None:
            await asyncio.sleep(warmup)
            cpu.begin()
            await asyncio.sleep(duration)
            cpu.end()

    metering = asyncio.create_task(meter())
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + duration
    ok = errors = sent = 0
    latencies: list[float] = []

    async def loop(worker: int) -> None:
        nonlocal ok, errors, sent
        conn = RawHttp(base_url)
        try:
            while True:
                began = time.perf_counter()
                if began >= end:
                    return
                try:
                    good = await step(conn, worker)
                except (OSError, asyncio.IncompleteReadError):
                    good = False
                done = time.perf_counter()
                sent += 1
                if began >= measure_from:
                    if good:
                        ok += 1
                        latencies.append((done - began) * 1000)
                    else:
                        errors += 1
        finally:
            await conn.close()

    await asyncio.gather(*(loop(w) for w in range(concurrency)))
    await metering
    return ok, errors, duration, latencies, sent


async def _get_loop(
    base_url: str,
    path: str,
    token: str,
    concurrency: int,
    duration: float,
    warmup: float,
    cpu: CpuMeter | None = None,
) -> Drive:
    headers = {"Authorization": f"Bearer {token}"}

    async def step(conn: RawHttp, worker: int) -> bool:
        status, _ = await conn.request("GET", path, headers)
        return status == 200

    return await drive(
        base_url, step, concurrency=concurrency, duration=duration, warmup=warmup, cpu=cpu
    )


def _get_proc(args: tuple[str, str, str, int, float, float]) -> Drive:
    return asyncio.run(_get_loop(*args))


def get_load(
    name: str,
    base_url: str,
    path: str,
    token: str,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    procs: int,
    cpu: CpuMeter | None = None,
) -> Result:
    """GETs from `procs` client processes (concurrency split between them); the servers' CPU
    is metered with one client process."""
    if procs <= 1:
        ok, errors, seconds, lat, sent = asyncio.run(
            _get_loop(base_url, path, token, concurrency, duration, warmup, cpu)
        )
        return Result(name, ok, errors, seconds, lat, dict(cpu.spent) if cpu else None, sent)
    per = max(1, concurrency // procs)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        parts = pool.map(_get_proc, [(base_url, path, token, per, duration, warmup)] * procs)
    return Result(
        name,
        sum(p[0] for p in parts),
        sum(p[1] for p in parts),
        duration,
        [x for p in parts for x in p[3]],
        sent=sum(p[4] for p in parts),
    )


# -- the platform --------------------------------------------------------------------------------
class Platform:
    """Servers + services started here, or the external gateway of AETHER_GATEWAY_URL."""

    def __init__(self) -> None:
        self.external = os.environ.get("AETHER_GATEWAY_URL", "").rstrip("/") or None
        self.gateway_url = self.external or ""
        self.uncached_url: str | None = None
        self.uncached_pid = 0
        self.redis_url = os.environ.get("AETHER_REDIS_URL", "redis://127.0.0.1:6379/0")
        self.private_redis = False
        self.gateway_prefix = ""
        self.auth_dsn = ""  # auth's database
        self._redis: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stack: Any = None
        self._fleet: Any = None
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        if self.external:
            return
        from aether_devstack.catalog import database_url, service_env
        from aether_devstack.fleet import Fleet
        from aether_devstack.servers import NativeStack, free_port

        self._tmp = tempfile.TemporaryDirectory(prefix="aether-bench-", ignore_cleanup_errors=True)
        data = Path(self._tmp.name)
        self._stack = NativeStack(data / "servers")
        endpoints = self._stack.start()
        (data / "logs").mkdir()
        private = start_private_redis(data / "logs" / "redis.log")
        if private is not None:
            self._redis, redis_url = private
            endpoints = dataclasses.replace(endpoints, redis_url=redis_url)
            self.private_redis = True
        self.redis_url = endpoints.redis_url
        run = secrets.token_hex(4)
        self.gateway_prefix = f"bench{run}:gateway:"
        gateway_env = {
            "GATEWAY_REDIS_KEY_PREFIX": self.gateway_prefix,
            "GATEWAY_RATE_LIMIT_ANONYMOUS": RAISED_LIMIT,
            "GATEWAY_RATE_LIMIT_FREE": RAISED_LIMIT,
            "AETHER_LOG_LEVEL": "WARNING",
        }
        extra = {"gateway": gateway_env, "auth": {"AETHER_LOG_LEVEL": "WARNING"}}
        self._fleet = Fleet(
            endpoints, ROOT, data / "logs", extra_env=extra, only=["auth", "gateway"]
        )
        self._fleet.start()
        self.gateway_url = self._fleet.http_url("gateway")
        self.auth_dsn = database_url(endpoints, self._fleet.spec("auth").postgres_databases[0])
        # A second gateway, /me never cached: every request is a GetMe RPC to auth.
        spec = self._fleet.spec("gateway")
        port = free_port()
        env = service_env(spec, self._fleet.specs, endpoints, ROOT) | gateway_env
        env |= {"AETHER_HTTP_PORT": str(port), "GATEWAY_PROFILE_CACHE_TTL_S": "0"}
        log = (data / "logs" / "gateway-uncached.log").open("wb")
        self._procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "aether_gateway"], env=env, stdout=log, stderr=log
            )
        )
        self.uncached_url = f"http://127.0.0.1:{port}"
        self.uncached_pid = self._procs[-1].pid
        wait_http(self.uncached_url + "/healthz", self._procs[-1])

    def redis_pid(self) -> int | None:
        """The run's own Redis server, when it has one."""
        return self._redis.pid if self._redis is not None else None

    def pids(self) -> dict[str, int]:
        """auth's and the gateway's process ids (empty for an external platform)."""
        if self._fleet is None:
            return {}
        pids: dict[str, int] = {}
        for name in ("auth", "gateway"):
            proc = self._fleet.process(name).proc
            if proc is not None:
                pids[name] = proc.pid
        return pids

    def stop(self) -> None:
        for proc in reversed(self._procs):
            stop_process(proc)
        if self._fleet is not None:
            self._fleet.stop()
        if self._stack is not None:
            self._stack.stop()
        if self._redis is not None:
            stop_process(self._redis)
        if self._tmp is not None:
            self._tmp.cleanup()


def start_private_redis(log_path: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """A Redis server of this run's own (when redis-server is installed): the machine's Redis may
    serve other work, whose commands would mix with the ones counted per request."""
    from aether_devstack.servers import free_port, tcp_open

    if shutil.which("redis-server") is None:
        return None
    port = free_port()
    log = log_path.open("wb")
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen([*argv, "--appendonly", "no"], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while not tcp_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"redis-server did not start on {port} (see {log_path})")
        time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (our own http URL)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not up after {timeout} s") from None
            time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_bare_app(
    body: dict[str, Any], redis_url: str | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """The bare app; with `redis_url`, the floor app (see serve_bare)."""
    from aether_devstack.servers import free_port

    port = free_port()
    argv = [sys.executable, __file__, "--serve-bare", str(port), json.dumps(body)]
    if redis_url:
        argv += ["--floor-redis", redis_url]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc)
    return url, proc


def serve_bare(port: int, body_json: str, floor_redis: str | None) -> None:
    """The baseline: FastAPI + uvicorn answering the same /me JSON, nothing behind it.

    With `floor_redis`, the floor of a gateway built this way: the same app doing only the Redis
    work a rate-limited cached /me cannot skip, one sliding-window script (ZREMRANGEBYSCORE,
    ZCARD, ZADD) and one cached read, through the gateway's auto-pipeline; no token check,
    middleware, routes or headers of the gateway's.
    """
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    body = json.loads(body_json)
    app = FastAPI()

    if floor_redis is None:

        @app.get("/api/auth/me")
        async def me() -> Response:
            return JSONResponse(body)

    else:
        from redis.asyncio import Redis

        from aether_common.redis_pipeline import AutoPipeline
        from aether_gateway.rate_limit import SLIDING_WINDOW_LUA

        pipeline = AutoPipeline(Redis.from_url(floor_redis))
        window = pipeline.script(SLIDING_WINDOW_LUA)
        cached = f"bench-floor:{secrets.token_hex(4)}"
        member = itertools.count()

        @app.get("/api/auth/me")
        async def me_floor() -> Response:
            await window(keys=[cached + ":rl"], args=[RAISED_LIMIT, 60_000, next(member)])
            raw = await pipeline.execute("GET", cached)
            return Response(raw or json.dumps(body), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )


# -- the floor of an uncached /me (me_floor.py) ---------------------------------------------------
def floor_config(
    jwks: dict[str, Any],
    redis_url: str,
    gateway_prefix: str,
    dsn: str,
    revocation_prefix: str | None = None,
) -> dict[str, Any]:
    """A floor's FloorConfig (bench/me_floor.py) with the gateway's defaults, as the run's
    gateway has them (its rate limit raised as the run raises it)."""
    from aether_gateway.config import GatewaySettings

    gateway = GatewaySettings.model_fields
    return {
        "jwks": jwks,
        "issuer": gateway["jwt_issuer"].default,
        "audience": gateway["jwt_audience"].default,
        "leeway_s": gateway["jwt_leeway_s"].default,
        "redis_url": redis_url,
        "timeout_s": gateway["auth_timeout_s"].default,
        "revocation_prefix": revocation_prefix or gateway["revocation_key_prefix"].default,
        "gateway_prefix": gateway_prefix,
        "limit": int(RAISED_LIMIT),
        "window_ms": int(gateway["rate_limit_window_s"].default * 1000),
        "dsn": dsn,
    }


class FloorPair:
    """A floor's two processes, `python bench/SCRIPT grpc|http PORT CONFIG`: the gRPC side (the
    service's work), then the HTTP side (the gateway's work) calling it."""

    def __init__(self, script: str, config: dict[str, Any]) -> None:
        self.script = str(Path(__file__).with_name(script))
        self.config = config
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.url = ""

    def start(self) -> None:
        from aether_devstack.servers import free_port, tcp_open

        grpc_port, http_port = free_port(), free_port()
        config = json.dumps(self.config | {"upstream": f"127.0.0.1:{grpc_port}"})
        for side, port in (("floor gRPC", grpc_port), ("floor HTTP", http_port)):
            argv = [sys.executable, self.script, side.split()[1].lower(), str(port), config]
            self.procs[side] = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while not tcp_open(port):
                if self.procs[side].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{side} of {self.script} did not start")
                time.sleep(0.05)
        self.url = f"http://127.0.0.1:{http_port}"

    def pids(self) -> dict[str, int]:
        return {side: proc.pid for side, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):
            stop_process(proc)


class MeFloor(FloorPair):
    """bench/me_floor.py's two processes: the gRPC side (auth's work for GetMe) on auth's
    database and the run's Redis, and the HTTP side (the gateway's work) calling it."""

    def __init__(self, platform: Platform, jwks: dict[str, Any]) -> None:
        config = floor_config(jwks, platform.redis_url, platform.gateway_prefix, platform.auth_dsn)
        super().__init__("me_floor.py", config)


def jwks(gateway_url: str) -> dict[str, Any]:
    """auth's public keys, as the gateway serves them."""
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        response = client.get("/api/auth/jwks")
        response.raise_for_status()
        keys: dict[str, Any] = response.json()
        return keys


def check_same_answer(url: str, token: str, expected: dict[str, Any]) -> None:
    """The floor answers what the gateway answers, or its figures mean nothing."""
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    if response.json() != expected:
        raise RuntimeError(f"the floor answers {response.json()}, the gateway {expected}")


def print_cpu_beside_floor(uncached: Result, floor: Result) -> None:
    """Each side's CPU per request beside the floor's, and the floor's over ours."""
    if not uncached.cpu_s or not floor.cpu_s:
        print("CPU per request, uncached /me vs its floor: not metered (--client-procs > 1)")
        return

    def per_request(result: Result, name: str) -> float:
        return 1000 * (result.cpu_s or {}).get(name, 0.0) / max(1, result.requests)

    sides = {"gateway": "floor HTTP", "auth": "floor gRPC"}
    ours = {name: per_request(uncached, name) for name in sides}
    its = {name: per_request(floor, floor_side) for name, floor_side in sides.items()}
    print(
        "CPU per request, uncached /me vs its floor:   "
        + ";  ".join(
            f"{name} {ours[name]:.2f} ms vs {floor_side} side {its[name]:.2f} ms"
            for name, floor_side in sides.items()
        )
    )
    # Where the services limit the rate, the rate ratio tends to this; on a machine whose cores
    # are taken by other work the rates converge, and this says more.
    per_side = ", ".join(f"{name} side {its[name] / max(1e-9, ours[name]):.2f}" for name in sides)
    total = sum(its.values()) / max(1e-9, sum(ours.values()))
    print(f"CPU per request, its floor / ours: {total:.2f}  ({per_side})")


def print_uncached_floor(
    uncached: Result, floor: Result, ours: Counts, its: Counts, platform: Platform
) -> None:
    """The uncached /me beside its floor: rate, CPU per request, datastore work per request."""
    ratio = uncached.rate / floor.rate if floor.rate else 0.0
    print_cpu_beside_floor(uncached, floor)
    redis = "the run's own Redis" if platform.private_redis else "the machine's Redis (shared)"
    print(f"Redis per request (INFO commandstats of {redis}, its CPU; whole phase):")
    print(f"  uncached gateway + auth  {ours.redis_line()}")
    print(f"  its floor                {its.redis_line()}")
    print(
        "PostgreSQL per request (auth's database: scans of users/oauth_identities in "
        "pg_stat_user_tables, commits in pg_stat_database, its backends' CPU; whole phase):"
    )
    print(f"  uncached gateway + auth  {ours.pg_line()}")
    print(f"  its floor                {its.pg_line()}")
    print(f"gateway uncached / its floor: {ratio:.2f}")
    print(f"  (goal >= 0.7: {'ok' if ratio >= 0.7 else 'BELOW GOAL'})")


# -- what a request costs the datastores ---------------------------------------------------------
# PostgreSQL 15+ backends report their statistics at most once a second while busy and within
# 10 s once idle (PGSTAT_IDLE_INTERVAL): counts are read that long after the load stopped.
PG_STATS_SETTLE_S = 11.0
PG_TABLES = ("users", "oauth_identities")  # what auth reads for GetMe


@dataclass
class Counts:
    redis: dict[str, float]  # commands per request, by command (INFO commandstats)
    pg_statements: float  # index + sequential scans of PG_TABLES per request
    pg_commits: float  # transactions committed in auth's database per request
    pg_cpu_ms: float  # CPU of the backends connected to auth's database, per request
    redis_cpu_ms: float | None  # CPU of the run's own Redis server per request (None: shared)

    def redis_line(self) -> str:
        total = sum(self.redis.values())
        detail = ", ".join(f"{cmd} {n:.2f}" for cmd, n in sorted(self.redis.items()) if n >= 0.01)
        cpu = "" if self.redis_cpu_ms is None else f"; server CPU {self.redis_cpu_ms:.2f} ms"
        return f"{total:5.2f} ({detail}){cpu}"

    def pg_line(self) -> str:
        return (
            f"{self.pg_statements:4.2f} statements, {self.pg_commits:4.2f} commits; "
            f"backends' CPU {self.pg_cpu_ms:.2f} ms"
        )


@dataclass
class _Snapshot:
    commands: dict[str, int]
    scans: int
    commits: int
    pg_cpu: dict[int, float]  # backend pid -> CPU seconds so far
    redis_cpu: float


class DatastoreCounts:
    """Redis commands (INFO commandstats of the run's own Redis) and PostgreSQL work in auth's
    database (pg_stat_user_tables scans of the tables GetMe reads; pg_stat_database commits) that
    a phase caused, per request it sent, with the CPU the Redis server and the PostgreSQL
    backends connected to auth's database spent (/proc; a backend that connected during the
    phase counts from zero). pg_stat_statements is not assumed to be loaded, so a statement is
    counted by the scan it makes of `users` or `oauth_identities` (each of GetMe's statements
    reads one of them once, by index)."""

    def __init__(self, redis_url: str, dsn: str, redis_pid: int | None) -> None:
        self.redis_url, self.dsn, self.redis_pid = redis_url, dsn, redis_pid
        self.quiet_from = 0.0  # monotonic time the last load on auth's database stopped
        self._start: _Snapshot | None = None

    def _read(self) -> _Snapshot:
        import asyncpg
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            stats: dict[str, Any] = client.info("commandstats")
        finally:
            client.close()
        commands = {
            name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()
        }

        async def pg() -> tuple[int, int, list[int]]:
            conn = await asyncpg.connect(self.dsn)
            try:
                scans = await conn.fetchval(
                    "SELECT sum(coalesce(idx_scan, 0) + coalesce(seq_scan, 0)) "
                    "FROM pg_stat_user_tables WHERE relname = any($1::text[])",
                    list(PG_TABLES),
                )
                commits = await conn.fetchval(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                )
                backends = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await conn.close()
            return int(scans or 0), int(commits), [int(row["pid"]) for row in backends]

        scans, commits, pids = asyncio.run(pg())
        pg_cpu: dict[int, float] = {}
        for pid in pids:
            with contextlib.suppress(OSError):  # gone meanwhile, or not on this machine
                pg_cpu[pid] = cpu_seconds(pid)
        redis_cpu = cpu_seconds(self.redis_pid) if self.redis_pid else 0.0
        return _Snapshot(commands, scans, commits, pg_cpu, redis_cpu)

    def _settle(self) -> None:
        time.sleep(max(0.0, self.quiet_from + PG_STATS_SETTLE_S - time.monotonic()))

    def begin(self) -> None:
        self._settle()
        self._start = self._read()

    def end(self, sent: int) -> Counts:
        assert self._start is not None
        self.quiet_from = time.monotonic()
        self._settle()
        start, now = self._start, self._read()
        n = max(1, sent)
        redis = {
            cmd: (calls - start.commands.get(cmd, 0)) / n
            for cmd, calls in now.commands.items()
            if cmd not in ("info", "hello", "client|setinfo", "select")
        }
        pg_cpu = sum(cpu - start.pg_cpu.get(pid, 0.0) for pid, cpu in now.pg_cpu.items())
        return Counts(
            {cmd: v for cmd, v in redis.items() if v > 0},
            (now.scans - start.scans) / n,
            (now.commits - start.commits) / n,
            1000 * pg_cpu / n,
            1000 * (now.redis_cpu - start.redis_cpu) / n if self.redis_pid else None,
        )


# -- profiles (--py-spy) -------------------------------------------------------------------------
class Profiler:
    """py-spy on the named processes for one phase: raw collapsed stacks in `directory`, then the
    top functions by self time (samples where the function itself was running; Python frames
    only unless `native`, so that time inside C extensions such as grpc's or uvloop's counts to
    their Python caller). Non-blocking sampling (native: each sample pauses the process); it
    takes CPU from the machine either way, so a profiled run's figures are not the benchmark's."""

    RATE = 250  # samples per second

    def __init__(self, directory: Path, *, native: bool = False) -> None:
        self.directory = directory
        self.native = native
        directory.mkdir(parents=True, exist_ok=True)
        found = shutil.which("py-spy")
        self.command = [found] if found else ["uvx", "py-spy"]
        self._running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, pids: dict[str, int], seconds: float) -> None:
        for name, pid in pids.items():
            out = self.directory / f"{name.replace(' ', '-')}.txt"
            argv = [*self.command, "record", "--pid", str(pid), "--duration", str(int(seconds))]
            argv += ["--rate", str(self.RATE), "--format", "raw", "-o", str(out)]
            # py-spy reads C stacks only from a paused process.
            argv += ["--native"] if self.native else ["--nonblocking"]
            log = out.with_suffix(".log").open("wb")
            self._running[name] = subprocess.Popen(argv, stdout=log, stderr=log)

    def finish(self, top: int = 10) -> list[str]:
        lines: list[str] = []
        for name, proc in self._running.items():
            proc.wait(60)
            out = self.directory / f"{name.replace(' ', '-')}.txt"
            if not out.exists():
                lines.append(f"{name}: no profile (py-spy exited with {proc.returncode})")
                continue
            lines.append(f"{name}: top {top} by self time ({out})")
            lines += [f"  {line}" for line in self_time_top(out.read_text(), top)]
        self._running.clear()
        return lines


def self_time_top(collapsed: str, top: int) -> list[str]:
    """The leaf frames of py-spy's raw (collapsed) stacks, by share of the samples."""
    self_samples: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        function, _, where = leaf.partition(" (")
        where = where.rstrip(")").rsplit(":", 1)[0]  # the file, not the line
        key = f"{function} ({'/'.join(Path(where).parts[-2:])})"
        self_samples[key] = self_samples.get(key, 0) + int(count)
        total += int(count)
    ranked = sorted(self_samples.items(), key=lambda kv: -kv[1])[:top]
    return [f"{100 * n / max(1, total):5.1f}%  {key}" for key, n in ranked]


# -- the phases ----------------------------------------------------------------------------------
async def make_users(base_url: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def one() -> tuple[str, dict[str, Any]]:
            email = f"bench.{secrets.token_hex(6)}@example.com"
            reg = await client.post(
                "/api/auth/register", json={"email": email, "password": PASSWORD}
            )
            reg.raise_for_status()
            login = await client.post(
                "/api/auth/login", json={"email": email, "password": PASSWORD}
            )
            login.raise_for_status()
            return email, login.json()["tokens"]

        sem = asyncio.Semaphore(8)

        async def limited() -> tuple[str, dict[str, Any]]:
            async with sem:
                return await one()

        return await asyncio.gather(*(limited() for _ in range(count)))


async def bench_logins(
    base_url: str,
    users: list[tuple[str, dict[str, Any]]],
    args: argparse.Namespace,
    cpu: CpuMeter | None,
) -> Result:
    bodies = [json.dumps({"email": email, "password": PASSWORD}).encode() for email, _ in users]

    async def step(conn: RawHttp, worker: int) -> bool:
        body = bodies[worker % len(bodies)]
        status, _ = await conn.request("POST", "/api/auth/login", {}, body)
        return status == 200

    ok, errors, seconds, lat, sent = await drive(
        base_url,
        step,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        cpu=cpu,
    )
    spent = dict(cpu.spent) if cpu else None
    return Result("password logins (POST /api/auth/login)", ok, errors, seconds, lat, spent, sent)


async def bench_refreshes(
    base_url: str,
    users: list[tuple[str, dict[str, Any]]],
    args: argparse.Namespace,
    cpu: CpuMeter | None,
) -> Result:
    chains = [tokens["refresh_token"] for _, tokens in users]

    async def step(conn: RawHttp, worker: int) -> bool:
        body = json.dumps({"refresh_token": chains[worker]}).encode()
        status, data = await conn.request("POST", "/api/auth/refresh", {}, body)
        if status != 200:
            return False
        chains[worker] = json.loads(data)["refresh_token"]
        return True

    ok, errors, seconds, lat, sent = await drive(
        base_url,
        step,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        cpu=cpu,
    )
    spent = dict(cpu.spent) if cpu else None
    return Result("refreshes (POST /api/auth/refresh)", ok, errors, seconds, lat, spent, sent)


def argon2_parameters() -> str:
    from aether_auth.passwords import DEFAULT_MEMORY_KIB, DEFAULT_TIME_COST

    return (
        f"argon2id t={DEFAULT_TIME_COST}, m={DEFAULT_MEMORY_KIB // 1024} MiB, p=1 "
        "(auth's defaults, AUTH_ARGON2_*; OWASP's 7 MiB configuration and Keycloak's default)"
    )


def hash_cost_lines(rounds: int = 40) -> list[str]:
    """CPU of one verification at auth's parameters: auth's hasher (libsodium, in its worker
    thread) beside argon2-cffi's portable wheel (in the lock through minio), one at a time."""
    from aether_auth.passwords import DEFAULT_MEMORY_KIB, DEFAULT_TIME_COST, Passwords

    password = PASSWORD

    async def ours() -> float:
        passwords = Passwords(workers=1)
        try:
            stored = await passwords.hash(password)
            await passwords.verify(stored, password)
            started = time.process_time()
            for _ in range(rounds):
                assert (await passwords.verify(stored, password)).ok
            return time.process_time() - started
        finally:
            await passwords.stop()

    ms = asyncio.run(ours()) / rounds * 1000
    lines = [f"one verification, libsodium (PyNaCl, auth's hasher) {ms:6.1f} ms CPU"]
    try:
        from argon2 import PasswordHasher, Type
    except ImportError:
        return lines
    cffi = PasswordHasher(
        time_cost=DEFAULT_TIME_COST, memory_cost=DEFAULT_MEMORY_KIB, parallelism=1, type=Type.ID
    )
    stored = cffi.hash(password)
    started = time.process_time()
    for _ in range(rounds):
        cffi.verify(stored, password)
    ms = (time.process_time() - started) / rounds * 1000
    lines.append(f"one verification, argon2-cffi (portable wheel)     {ms:6.1f} ms CPU")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent requests")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="load-generator processes for the GET phases (concurrency split between them)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="profile the uncached gateway and auth, then the floor's two sides, with py-spy "
        "(raw stacks in DIR, top functions by self time printed)",
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="with --py-spy: C frames too (grpc's core, uvloop, asyncpg's protocol)",
    )
    parser.add_argument("--serve-bare", nargs=2, metavar=("PORT", "BODY"), help=argparse.SUPPRESS)
    parser.add_argument("--floor-redis", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(int(args.serve_bare[0]), args.serve_bare[1], args.floor_redis)
        return

    cores = os.cpu_count() or 1
    platform = Platform()
    profiles: list[str] = []
    bare_proc: subprocess.Popen[bytes] | None = None
    started = time.perf_counter()
    try:
        platform.start()
        base = platform.gateway_url
        print(
            f"gateway {base}"
            + (" (external: its own rate limits apply)" if platform.external else "")
        )
        if not platform.external:
            print(
                "started here: servers (NativeStack), auth and gateway (Fleet), a second gateway "
                "with GATEWAY_PROFILE_CACHE_TTL_S=0; gateway rate limits raised for the run "
                f"(GATEWAY_RATE_LIMIT_ANONYMOUS={RAISED_LIMIT}, "
                f"GATEWAY_RATE_LIMIT_FREE={RAISED_LIMIT})"
            )
        print(
            f"cores: {cores} (servers, services and load generator all share them); "
            f"concurrency {args.concurrency}; "
            f"{args.warmup:g} s warm-up + {args.duration:g} s per phase; "
            "load generator: raw asyncio HTTP/1.1 keep-alive connections (one per concurrent "
            "request; httpx's AsyncClient manages only ~130 req/s per process here), 1 process "
            f"for logins/refreshes, {args.client_procs} process(es) for the GET phases"
        )
        users = asyncio.run(make_users(base, args.concurrency))
        token = users[0][1]["access_token"]

        pids = platform.pids()
        logins = asyncio.run(bench_logins(base, users, args, CpuMeter(pids) if pids else None))
        refreshes = asyncio.run(
            bench_refreshes(base, users, args, CpuMeter(pids) if pids else None)
        )
        refreshes_done = time.monotonic()

        with httpx.Client(base_url=base, timeout=30) as client:
            me_json = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
            me_json.raise_for_status()
        bare_url, bare_proc = start_bare_app(me_json.json())
        get = dict(
            token=token,
            concurrency=args.concurrency,
            duration=args.duration,
            warmup=args.warmup,
            procs=args.client_procs,
        )
        bare = get_load(
            "bare FastAPI app: GET /api/auth/me (same JSON)",
            bare_url,
            "/api/auth/me",
            **get,
            cpu=CpuMeter({"bare app": bare_proc.pid}),
        )
        stop_process(bare_proc)
        bare_proc = None
        floor_url, floor_proc = start_bare_app(me_json.json(), platform.redis_url)
        try:
            floor = get_load(
                "floor: bare app + the Redis work of a cached /me",
                floor_url,
                "/api/auth/me",
                **get,
                cpu=CpuMeter({"floor app": floor_proc.pid}),
            )
        finally:
            stop_process(floor_proc)
        cached = get_load(
            "gateway GET /api/auth/me (cached in Redis)",
            base,
            "/api/auth/me",
            **get,
            cpu=CpuMeter(pids) if pids else None,
        )
        uncached: Result | None = None
        me_floor: Result | None = None
        uncached_counts: Counts | None = None
        floor_counts: Counts | None = None
        if platform.uncached_url:
            counts = DatastoreCounts(platform.redis_url, platform.auth_dsn, platform.redis_pid())
            counts.quiet_from = refreshes_done
            profiler = Profiler(Path(args.py_spy), native=args.native) if args.py_spy else None
            uncached_pids = {"gateway": platform.uncached_pid, "auth": pids["auth"]}
            counts.begin()
            if profiler:
                profiler.start(uncached_pids, args.warmup + args.duration)
            uncached = get_load(
                "gateway GET /api/auth/me (uncached: GetMe RPC)",
                platform.uncached_url,
                "/api/auth/me",
                **get,
                cpu=CpuMeter(uncached_pids),
            )
            uncached_counts = counts.end(uncached.sent)
            pair = MeFloor(platform, jwks(base))
            try:
                pair.start()
                check_same_answer(pair.url, token, me_json.json())
                counts.begin()
                if profiler:
                    profiles = profiler.finish()
                    profiler.start(pair.pids(), args.warmup + args.duration)
                me_floor = get_load(
                    "its floor: bare FastAPI -> bare grpc.aio",
                    pair.url,
                    "/api/auth/me",
                    **get,
                    cpu=CpuMeter(pair.pids()),
                )
                floor_counts = counts.end(me_floor.sent)
                if profiler:
                    profiles += profiler.finish()
            finally:
                pair.stop()
        export = get_load(
            "gateway GET /api/auth/me/export (RPC)",
            base,
            "/api/auth/me/export",
            **get,
            cpu=CpuMeter(pids) if pids else None,
        )
    finally:
        if bare_proc is not None:
            stop_process(bare_proc)
        platform.stop()

    print()
    print(f"passwords: {argon2_parameters()}")
    for line in hash_cost_lines():
        print(f"  {line}")
    for result in (logins, refreshes, bare, floor, cached, uncached, me_floor, export):
        if result is not None:
            print(result.line())
    print()
    for result in (bare, floor, cached, uncached, export):
        if result is not None and result.cpu_s:
            print(f"CPU per request, {result.name.split(':')[0]:<38} {result.cpu_line()}")
    if uncached and me_floor and uncached_counts and floor_counts:
        print()
        print_uncached_floor(uncached, me_floor, uncached_counts, floor_counts, platform)
        if profiles:
            print("\npy-spy during the two phases (not the benchmark's figures: it takes CPU):")
            print("\n".join(profiles))
    print()

    def verdict(ok: bool) -> str:
        return "ok" if ok else "BELOW GOAL"

    for name, result, goal in (("logins", logins, 30), ("refreshes", refreshes, 240)):
        per_core = result.rate / cores
        print(
            f"{name}/s per core of this machine:  {per_core:7.1f}  (goal >= {goal})   "
            f"{verdict(per_core >= goal)}"
        )
        if result.cpu_s and result.cpu_s.get("auth"):
            # Keycloak's sizing counts the vCPUs given to Keycloak itself (the database is
            # sized apart): the like-for-like figure is requests per second of auth's CPU.
            per_auth_core = result.rate * result.seconds / result.cpu_s["auth"]
            print(
                f"{name}/s per core of auth:          {per_auth_core:7.1f}  (goal >= {goal})   "
                f"{verdict(per_auth_core >= goal)}   (CPU per request: {result.cpu_line()})"
            )
    print(f"floor            / bare app: {floor.rate / bare.rate if bare.rate else 0.0:5.2f}")
    for label, result in (("cached", cached), ("uncached", uncached), ("export", export)):
        if result is None:
            continue
        ratio = result.rate / bare.rate if bare.rate else 0.0
        print(
            f"gateway {label:<8} / bare app: {ratio:5.2f}  (goal >= 0.5)   {verdict(ratio >= 0.5)}"
        )
    print(f"\ntotal run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
