"""Benchmark: no-op jobs through `POST /api/jobs`, run to completion, beside their floor
(bench/worker_floor.py) in the same run; then the queue wait at half the measured capacity.

    uv run python bench/worker.py [--clients 16] [--duration 20] [--warmup 5] [--owners 8]
                                                                            (make bench-worker)

Starts the backing servers and auth, the worker and the gateway as their own processes
(bench/ai.py's Platform); --owners operators (the `noop` type is theirs) registered and made
admins with auth's CLI; the worker's work fetch wait at 10 ms (the local broker holds every
fetch that long even with records ready: ENVIRONMENT.md) and its quota of queued + running jobs
raised out of the way. A job is done when its `completed` status event arrives on
`aether.job.status_changed.v1` (consumed here, as an internal team would), which also carries
its times (queue wait = started_at - created_at, the database's clock).

1. capacity: --clients closed loops (keep-alive connections, owners taken in turn) submit
   `{"type": "noop", "params": {}}` as fast as they are answered for --warmup + --duration s;
   jobs/s = the jobs submitted in the measured window that completed / the time from the
   window's start to the last of them completing.
2. the floor, the same way: a bare FastAPI route and a bare aiokafka runner doing a job's
   PostgreSQL writes with asyncpg (bench/worker_floor.py's docstring lists them).
3. queue wait: submissions paced at half the platform's capacity for --duration s; p50/p95.
Goal: the platform >= 0.5 of the floor's jobs/s. Printed with each: the CPU each process used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ai import Platform
from alerts_latency import metered, scratch_database
from chat import PASSWORD, RawHttp, checked, percentile

BENCH = Path(__file__).resolve().parent
NOOP = {"type": "noop", "params": {}}
STATUS_TOPIC = "aether.job.status_changed.v1"
GOAL = 0.5


@dataclass
class Completions:
    """Completed jobs seen on a status topic: id -> (arrival, queue wait in ms)."""

    done: dict[str, tuple[float, float]] = field(default_factory=dict)

    def add(self, job_id: str, created: datetime, started: datetime) -> None:
        wait_ms = (started - created).total_seconds() * 1000
        self.done.setdefault(job_id, (time.perf_counter(), wait_ms))


async def follow(
    bootstrap: str, topic: str, completions: Completions, parse: Callable[[Any], Any]
) -> asyncio.Task[None]:
    """A task consuming `topic` from its end, feeding `completions`; it runs until cancelled."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{secrets.token_hex(4)}",
        auto_offset_reset="latest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)

    async def run() -> None:
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        done = parse(record)
                        if done is not None:
                            completions.add(*done)
        finally:
            await consumer.stop()

    return asyncio.create_task(run())


def platform_event(record: Any) -> tuple[str, datetime, datetime] | None:
    from aether.worker.v1 import events_pb2
    from aether_common.events import event_from_record

    job = event_from_record(record.headers, record.value, events_pb2.JobStatusChanged).payload.job
    if job.status != "completed":
        return None
    return job.id, job.created_at.ToDatetime(), job.started_at.ToDatetime()


def floor_event(record: Any) -> tuple[str, datetime, datetime] | None:
    event = orjson.loads(record.value)
    if event["status"] != "completed":
        return None
    created, started = (datetime.fromisoformat(event[k]) for k in ("created_at", "started_at"))
    return event["id"], created, started


Submit = Callable[[RawHttp, int], Awaitable[str]]


@dataclass
class Run:
    name: str
    jobs_per_s: float
    submitted: int
    completed: int
    waits_ms: list[float]
    cpu: dict[str, float]


async def closed_loops(
    base: str, clients: int, warmup: float, duration: float, submit: Submit
) -> tuple[list[str], float]:
    """The ids of the jobs submitted in the measured window, and the window's start."""
    start = time.perf_counter()
    window, end = start + warmup, start + warmup + duration
    measured: list[str] = []

    async def loop(n: int) -> None:
        http = RawHttp(base)
        try:
            while (now := time.perf_counter()) < end:
                job_id = await submit(http, n)
                if now >= window:
                    measured.append(job_id)
        finally:
            http.close()

    await asyncio.gather(*(loop(n) for n in range(clients)))
    return measured, window


async def paced(base: str, rate: float, duration: float, submit: Submit) -> list[str]:
    """Submissions at `rate` per second for `duration` s, each on a connection of its own (an
    idle keep-alive connection would be closed by the server between paced calls)."""
    ids: list[str] = []

    async def one(n: int) -> None:
        http = RawHttp(base)
        try:
            ids.append(await submit(http, n))
        finally:
            http.close()

    tasks = []
    start = time.perf_counter()
    for n in range(int(rate * duration)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return ids


async def settled(completions: Completions, ids: list[str], within: float = 60.0) -> None:
    deadline = time.perf_counter() + within
    pending = [i for i in ids if i not in completions.done]
    while pending and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
        pending = [i for i in pending if i not in completions.done]


async def measure(
    name: str,
    base: str,
    submit: Submit,
    completions: Completions,
    pids: dict[str, int],
    a: argparse.Namespace,
) -> Run:
    async def capacity() -> tuple[list[str], float]:
        ids, window = await closed_loops(base, a.clients, a.warmup, a.duration, submit)
        await settled(completions, ids)
        return ids, window

    (ids, window), cpu = await metered(pids, capacity)
    done = [completions.done[i][0] for i in ids if i in completions.done]
    rate = len(done) / (max(done) - window) if done else 0.0
    return Run(name, rate, len(ids), len(done), [], cpu)


async def queue_wait(
    base: str, submit: Submit, completions: Completions, rate: float, s: float
) -> list[float]:
    ids = await paced(base, rate, s, submit)
    await settled(completions, ids)
    return sorted(completions.done[i][1] for i in ids if i in completions.done)


async def operators(platform: Platform, count: int) -> list[str]:
    """`count` admins' access tokens: registered, promoted with auth's CLI, logged in again (a
    new connection: the promotions outlast the keep-alive)."""
    bodies = [
        {"email": f"bench.ops{n}.{secrets.token_hex(4)}@example.com", "password": PASSWORD}
        for n in range(count)
    ]
    for phase in ("register", "promote", "login"):
        http = RawHttp(platform.gateway_url)
        try:
            tokens = []
            for body in bodies:
                if phase == "promote":
                    await asyncio.to_thread(platform.promote, body["email"])
                else:
                    answer = await checked(http, "POST", f"/api/auth/{phase}", body, None)
                    if phase == "login":
                        tokens.append(answer["tokens"]["access_token"])
        finally:
            http.close()
    return tokens


async def main_async(a: argparse.Namespace) -> bool:
    platform = Platform()
    unused = "127.0.0.1:9"  # peers the no-op job never calls
    env = {
        "worker": {
            "WORKER_CHARTS_GRPC_TARGET": unused,
            "WORKER_AI_GRPC_TARGET": unused,
            "WORKER_CHAT_GRPC_TARGET": unused,
            "WORKER_ALERTS_GRPC_TARGET": unused,
            "WORKER_MEMORY_GRPC_TARGET": unused,
            "WORKER_WORK_FETCH_MAX_WAIT_MS": "10",
            "WORKER_CONCURRENT_ADMIN": "1000000",
        }
    }
    await asyncio.to_thread(
        platform.start, 1, services=("auth", "worker", "gateway"), service_env=env
    )
    floor_procs: list[subprocess.Popen[bytes]] = []
    try:
        tokens = await operators(platform, a.owners)

        async def submit(http: RawHttp, n: int) -> str:
            job = await checked(http, "POST", "/api/jobs", NOOP, tokens[n % len(tokens)])
            job_id: str = job["id"]
            return job_id

        completions = Completions()
        follower = await follow(platform.kafka_bootstrap, STATUS_TOPIC, completions, platform_event)
        pids = {n: platform.pid(n) for n in ("gateway", "worker")} | {"bench": os.getpid()}
        print(
            f"no-op jobs: {a.clients} clients, {a.warmup:g} s warm-up + {a.duration:g} s",
            flush=True,
        )
        runs = [await measure("platform", platform.gateway_url, submit, completions, pids, a)]
        half = runs[0].jobs_per_s / 2
        runs[0].waits_ms = await queue_wait(
            platform.gateway_url, submit, completions, half, a.duration
        )
        follower.cancel()

        # The floor, on the same servers: a scratch database, its own topics.
        from aether_common.events.topics import TopicSpec, ensure_topics
        from aether_devstack.servers import free_port

        dsn = await scratch_database(platform.postgres_dsn, "bench_worker_floor")
        prefix = f"bench{secrets.token_hex(3)}."
        work, status = prefix + "floor.work", prefix + "floor.status"
        await ensure_topics(
            platform.kafka_bootstrap, [TopicSpec(work, partitions=6), TopicSpec(status)]
        )
        port = free_port()
        script = str(BENCH / "worker_floor.py")
        kafka = platform.kafka_bootstrap
        for argv in (["runner", kafka, dsn, prefix], ["api", str(port), kafka, dsn, prefix]):
            floor_procs.append(subprocess.Popen([sys.executable, script, *argv]))  # noqa: ASYNC220
        base = f"http://127.0.0.1:{port}"
        await floor_ready(base)

        async def floor_submit(http: RawHttp, n: int) -> str:
            return await floor_post(http, n % a.owners)

        completions = Completions()
        follower = await follow(kafka, status, completions, floor_event)
        pids = {
            "floor api": floor_procs[1].pid,
            "floor runner": floor_procs[0].pid,
            "bench": os.getpid(),
        }
        runs.append(await measure("floor (bare)", base, floor_submit, completions, pids, a))
        runs[1].waits_ms = await queue_wait(base, floor_submit, completions, half, a.duration)
        follower.cancel()
    finally:
        for proc in floor_procs:
            proc.terminate()
            proc.wait(10)
        await asyncio.to_thread(platform.stop)
    return report(runs, half)


async def floor_ready(base: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            http = RawHttp(base)
            await floor_post(http, 0)
            http.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def floor_post(http: RawHttp, owner: int) -> str:
    status, body = await http.request("POST", "/jobs", NOOP | {"owner": f"ops{owner}"}, None)
    if status != 202:
        raise RuntimeError(f"floor POST /jobs: {status} {body}")
    job_id: str = body["id"]
    return job_id


def report(runs: list[Run], half: float) -> bool:
    floor = runs[-1].jobs_per_s
    print(
        f"{'':14}{'jobs/s':>9}{'vs floor':>10}{'done':>12}"
        f"   queue wait at {half:,.0f} jobs/s: p50 / p95 ms"
    )
    for r in runs:
        print(
            f"{r.name:14}{r.jobs_per_s:>9,.0f}{r.jobs_per_s / floor:>10.2f}"
            f"{r.completed:>6,}/{r.submitted:<6,}"
            f"   {percentile(r.waits_ms, 0.5):8.1f} / {percentile(r.waits_ms, 0.95):.1f}"
        )
    for r in runs:
        spent = ", ".join(f"{k} {v:.0f}%" for k, v in r.cpu.items())
        print(f"CPU, {r.name} (1 core = 100%, of {(os.cpu_count() or 1) * 100}%): {spent}")
    met = runs[0].jobs_per_s >= GOAL * floor and runs[0].completed == runs[0].submitted
    print(
        f"goal platform >= {GOAL} of the floor, every job completed: {'met' if met else 'MISSED'}"
    )
    return met


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--owners", type=int, default=8)
    sys.exit(0 if asyncio.run(main_async(p.parse_args())) else 1)


if __name__ == "__main__":
    main()
