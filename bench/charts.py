"""Benchmark: the charts service's reads through the gateway, and its bulk import, beside floors.

    uv run python bench/charts.py [--concurrency C] [--duration S] [--import-rows N]
                                                                          (make bench-charts)

Starts the backing servers and auth, charts and the gateway as their own processes (bench/ai.py's
Platform; charts without its bundled history), then writes two synthetic instruments straight
into charts' database, named "synthetic random walk (bench)" (no bundled data set has minute
bars or 100k bars of one symbol): SYN.1D, daily bars on weekdays 2015-2024 (2,609, UTC), and
SYN.1M, 100,000 one-minute bars 24/7 from 2024-01-01 UTC. A geometric random walk, seeded.

Each read is a chart as a client wants it: every page of it, following `next_cursor`, at
limit 10,000 (charts' CHARTS_MAX_LIMIT and the gateway's most):
1. daily: GET /api/charts/SYN.1D?interval=1d, 10 years (2,609 candles, one page);
2. minute: GET /api/charts/SYN.1M?interval=1m, 30 days (43,200 candles, five pages);
3. indicators: GET /api/charts/indicators?symbol=SYN.1M&interval=1m&indicators=sma:20,rsi:14,
   macd:12:26:9 over all 100,000 bars (ten pages, each with charts' warm-up before it).
Beside each, its floor (bench/charts_floor.py: a bare FastAPI route doing the gateway's token
and Redis work, calling a bare grpc.aio servicer that runs charts' SQL with asyncpg and raw
TA-Lib), checked first to answer the same JSON. --concurrency clients (default 8, the same for
both) each walk the chart over and over on one keep-alive connection (chat.py's RawHttp);
measured: pages/s over --duration seconds after a warm-up, the service and the floor
alternated --rounds times (default 2; the means compared). Goal: the service >= 0.7 of its
floor. Printed with each run: CPU per page of every process (gateway, charts, the floor's two
sides, charts' PostgreSQL backends, this load generator); after each chart, the CPU per page of
each path (the machine is shared: CPU per page moves less than pages/s when others run).

4. Bulk import: --import-rows (default 500,000) one-minute bars as a CSV file through the
   import CLI's path (aether_charts.service.import_file: parse and check, partitions, COPY into
   a temporary table, INSERT ... SELECT into `bars`), in this process, against bare asyncpg
   COPY of the same rows (already parsed) into `bars` with its partitions there; each into a
   fresh, migrated database. Goal: the import >= 0.5 of the COPY's rows/s.

Everything (servers, services, floors, load generator) shares this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ai import Platform
from auth import FloorPair, Profiler, floor_config, jwks
from chat import RawHttp, cpu_seconds, new_user

GOAL_READ_RATIO = 0.7
GOAL_IMPORT_RATIO = 0.5
SYNTHETIC = "synthetic random walk (bench)"
DAILY, MINUTE, IMPORTED = "SYN.1D", "SYN.1M", "SYN.IMPORT"
MINUTE_START = datetime(2024, 1, 1, tzinfo=UTC)
MINUTE_BARS = 100_000
PAGE_LIMIT = 10_000
INDICATORS = "sma:20,rsi:14,macd:12:26:9"  # charts_floor.INDICATORS


# -- synthetic bars --------------------------------------------------------------------------------
Row = tuple[str, datetime, float, float, float, float, float]


def random_walk(symbol: str, times: list[datetime], seed: int) -> list[Row]:
    """(symbol, time, open, high, low, close, volume) of a seeded geometric random walk."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, len(times))))
    open_ = np.r_[100.0, close[:-1]]
    spread = 1 + np.abs(rng.normal(0, 0.001, (2, len(times))))
    high = np.maximum(open_, close) * spread[0]
    low = np.minimum(open_, close) / spread[1]
    volume = rng.integers(100, 10_000, len(times)).astype(np.float64)
    return [
        (symbol, t, float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(times, open_, high, low, close, volume, strict=True)
    ]


def daily_times() -> list[datetime]:
    day, end, out = datetime(2015, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC), []
    while day < end:
        if day.weekday() < 5:
            out.append(day)
        day += timedelta(days=1)
    return out


def minute_times(count: int, start: datetime = MINUTE_START) -> list[datetime]:
    return [start + timedelta(minutes=n) for n in range(count)]


async def load(dsn: str) -> None:
    """SYN.1D and SYN.1M into charts' database, through its repository."""
    from aether_charts import repository
    from aether_charts.bars import Instrument

    conn = await asyncpg.connect(dsn)
    try:
        for symbol, resolution, rows in (
            (DAILY, "1d", random_walk(DAILY, daily_times(), 1)),
            (MINUTE, "1m", random_walk(MINUTE, minute_times(MINUTE_BARS), 2)),
        ):
            years = {row[1].year for row in rows}
            async with conn.transaction():
                await repository.ensure_partitions(conn, years)
            async with conn.transaction():
                await repository.add_instruments(
                    conn, [Instrument(symbol, SYNTHETIC, "UTC", resolution, "bench")]
                )
                await repository.write_bars(conn, rows, replace=False)
        await conn.execute("ANALYZE bars")
    finally:
        await conn.close()


# -- the charts asked for --------------------------------------------------------------------------
@dataclass(frozen=True)
class Chart:
    name: str
    path: str  # the first page; the next ones add `cursor`
    count: str  # the JSON key whose length is the candle count

    def page(self, cursor: str | None) -> str:
        return self.path + (f"&cursor={cursor}" if cursor else "")


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


CHARTS = [
    Chart(
        "10-year daily chart (1d)",
        f"/api/charts/{DAILY}?"
        + urlencode(
            {
                "interval": "1d",
                "from": "2015-01-01T00:00:00Z",
                "to": "2025-01-01T00:00:00Z",
                "limit": PAGE_LIMIT,
            },
            safe=":",
        ),
        "candles",
    ),
    Chart(
        "1-month minute chart (1m, 30 days)",
        f"/api/charts/{MINUTE}?"
        + urlencode(
            {
                "interval": "1m",
                "from": rfc3339(MINUTE_START),
                "to": rfc3339(MINUTE_START + timedelta(days=30)),
                "limit": PAGE_LIMIT,
            },
            safe=":",
        ),
        "candles",
    ),
    Chart(
        f"indicators {INDICATORS} over {MINUTE_BARS:,} 1m bars",
        "/api/charts/indicators?"
        + urlencode(
            {"symbol": MINUTE, "interval": "1m", "indicators": INDICATORS, "limit": PAGE_LIMIT},
            safe=":,",
        ),
        "times",
    ),
]


async def walk(
    http: RawHttp, chart: Chart, token: str, pages: list[float] | None = None
) -> list[Any]:
    """Every page of `chart` (`pages`: when each one came)."""
    answers, cursor = [], None
    while True:
        status, answer = await http.request("GET", chart.page(cursor), None, token)
        if status != 200:
            raise RuntimeError(f"{chart.page(cursor)}: {status} {answer}")
        answers.append(answer)
        if pages is not None:
            pages.append(time.monotonic())
        cursor = answer["next_cursor"]
        if not cursor:
            return answers


# -- CPU of the processes ------------------------------------------------------------------------
class Cpu:
    """CPU seconds of named processes over a window; `postgres`: the backends of one database
    (a backend that started within the window counts whole)."""

    def __init__(self, pids: dict[str, int], admin_dsn: str, database: str) -> None:
        self.pids, self.admin_dsn, self.database = pids, admin_dsn, database
        self._start: dict[str, float] = {}
        self._backends: dict[int, float] = {}

    async def backends(self) -> dict[int, float]:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                self.database,
            )
        finally:
            await conn.close()
        return {r["pid"]: cpu_seconds(r["pid"]) for r in rows}

    async def begin(self) -> None:
        self._backends = await self.backends()
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    async def end(self) -> dict[str, float]:
        spent = {name: cpu_seconds(pid) - self._start[name] for name, pid in self.pids.items()}
        after = await self.backends()
        spent["postgres"] = sum(cpu - self._backends.get(pid, 0.0) for pid, cpu in after.items())
        return spent


@dataclass
class Run:
    pages_per_s: float
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per page


async def measure(
    base_url: str,
    chart: Chart,
    token: str,
    cpu: Cpu,
    concurrency: int,
    warmup: float,
    seconds: float,
) -> Run:
    """Pages/s of `concurrency` clients walking `chart` back to back, over `seconds` after
    `warmup`; CPU per page of each process."""
    stop = False
    done: list[float] = []

    async def client() -> None:
        http = RawHttp(base_url)
        try:
            while not stop:
                await walk(http, chart, token, done)
        finally:
            http.close()

    tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    await cpu.begin()
    began = time.monotonic()
    await asyncio.sleep(seconds)
    ended = time.monotonic()
    spent = await cpu.end()
    stop = True
    await asyncio.gather(*tasks)
    pages = sum(1 for t in done if began <= t < ended)
    return Run(pages / (ended - began), {k: 1000 * v / max(1, pages) for k, v in spent.items()})


def cpu_line(run: Run) -> str:
    return ", ".join(f"{name} {ms:.1f}" for name, ms in run.cpu_ms.items() if ms >= 0.05)


async def profiled(
    directory: Path, chart: Chart, token: str, cpu: Cpu, args: argparse.Namespace,
    sides: dict[str, dict[str, int]],
) -> None:  # fmt: skip
    """One more run of each side under py-spy (not counted): the top functions by self time."""
    for url, pids in sides.items():
        profiler = Profiler(directory)
        profiler.start(pids, args.warmup + args.duration)
        await measure(url, chart, token, cpu, args.concurrency, args.warmup, args.duration)
        for line in await asyncio.to_thread(profiler.finish, 8):
            print(f"    {line}")


# -- import ----------------------------------------------------------------------------------------
async def fresh_database(endpoints: Any, name: str) -> str:
    """A new database with charts' migrations applied; its DSN."""
    from aether_common.postgres import PostgresDatabase
    from aether_devstack.catalog import database_url
    from aether_devstack.provision import ensure_databases

    await ensure_databases(endpoints, [name])
    dsn = database_url(endpoints, name)
    database = PostgresDatabase(
        dsn, service="charts", migrations=files("aether_charts") / "migrations", max_size=2
    )
    await database.start()
    await database.stop()
    return dsn


def as_csv(rows: list[Row]) -> bytes:
    lines = ["time,open,high,low,close,volume"]
    lines += [f"{rfc3339(t)},{o!r},{h!r},{lo!r},{c!r},{v!r}" for _, t, o, h, lo, c, v in rows]
    return ("\n".join(lines) + "\n").encode()


class Clock:
    """The measured part of an import: seconds and CPU (this process, the database's PostgreSQL
    backends) from `start()` to `stop()`, which the job calls around its writes only (its
    connections open: a backend's CPU is read while it lives)."""

    def __init__(self, cpu: Cpu) -> None:
        self.cpu = cpu
        self.seconds = 0.0
        self.spent: dict[str, float] = {}
        self._started = 0.0

    async def start(self) -> None:
        await self.cpu.begin()
        self._started = time.perf_counter()

    async def stop(self) -> None:
        self.seconds = time.perf_counter() - self._started
        self.spent = await self.cpu.end()


async def timed_import(
    endpoints: Any, name: str, job: Callable[[str, Clock], Awaitable[int]]
) -> tuple[int, Clock]:
    """`job(dsn, clock)` on a fresh database (dropped after): the rows it wrote, its clock."""
    from aether_devstack.provision import drop_databases

    dsn = await fresh_database(endpoints, name)
    clock = Clock(Cpu({"importer (this process)": os.getpid()}, endpoints.postgres_dsn, name))
    try:
        written = await job(dsn, clock)
    finally:
        await drop_databases(endpoints, [name])
    return written, clock


async def bench_import(endpoints: Any, count: int, py_spy: str | None = None) -> None:
    from aether_charts.repository import ensure_partitions
    from aether_charts.service import import_file
    from aether_common.postgres import PostgresDatabase

    rows = random_walk(IMPORTED, minute_times(count), 3)
    data = as_csv(rows)
    run = secrets.token_hex(4)

    async def service(dsn: str, clock: Clock) -> int:
        """The import CLI's work (aether_charts.importer) once its pool is open."""
        database = PostgresDatabase(
            dsn, service="charts", migrations=files("aether_charts") / "migrations", max_size=2
        )
        await database.start()
        profiler = Profiler(Path(py_spy) / "import") if py_spy else None
        try:
            if profiler:
                profiler.start({"importer": os.getpid()}, 600)
            await clock.start()
            imported = await import_file(
                database,
                IMPORTED,
                data,
                name=SYNTHETIC,
                timezone="UTC",
                resolution="1m",
                max_rows=10_000_000,
            )
            await clock.stop()
            return imported.written
        finally:
            await database.stop()
            if profiler:  # py-spy stops when told (SIGINT) and writes what it sampled
                for proc in profiler._running.values():
                    proc.send_signal(signal.SIGINT)
                for line in await asyncio.to_thread(profiler.finish, 10):
                    print(f"    {line}")

    async def bare(dsn: str, clock: Clock) -> int:
        """COPY of the parsed rows into `bars`, its partitions created before."""
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await ensure_partitions(conn, {row[1].year for row in rows})
            await clock.start()
            await conn.copy_records_to_table("bars", records=rows)
            await clock.stop()
            return len(rows)
        finally:
            await conn.close()

    print(
        f"bulk import of {count:,} 1m bars ({len(data) / 1e6:.1f} MB of CSV), fresh database each:"
    )
    results = {}
    for label, job in (("import", service), ("bare COPY", bare)):
        written, clock = await timed_import(endpoints, f"bench_charts_{label[:4]}_{run}", job)
        assert written == count, f"{label} wrote {written} of {count}"
        seconds = clock.seconds
        results[label] = count / seconds
        per_row = ", ".join(f"{name} {1e6 * s / count:.1f} us" for name, s in clock.spent.items())
        print(
            f"  {label:9} {count / seconds:10,.0f} rows/s ({seconds:.1f} s); CPU per row: {per_row}"
        )
    ratio = results["import"] / results["bare COPY"]
    verdict = "ok" if ratio >= GOAL_IMPORT_RATIO else "MISSED"
    print(f"  import / bare COPY: {ratio:.2f} (goal >= {GOAL_IMPORT_RATIO}: {verdict})")


# -- the run ---------------------------------------------------------------------------------------
async def run(args: argparse.Namespace) -> None:
    from aether_devstack.catalog import database_url

    print(
        f"cores: {os.cpu_count()}, shared by the servers, the services, the floors and this process"
    )
    platform = Platform()
    floor: FloorPair | None = None
    try:
        await asyncio.to_thread(
            platform.start,
            4,
            services=("auth", "charts", "gateway"),
            # The cache off: the floor keeps nothing, so both sides do the same work each time.
            service_env={"charts": {"CHARTS_LOAD_BUNDLED": "false", "CHARTS_CACHE_ENABLED": "false"}},
        )
        fleet = platform._fleet
        base_url = platform.gateway_url
        charts_db = fleet.spec("charts").postgres_databases[0]
        charts_dsn = database_url(fleet.endpoints, charts_db)
        started = time.perf_counter()
        await load(charts_dsn)
        print(
            f"loaded {SYNTHETIC}: {DAILY} ({len(daily_times()):,} daily bars), {MINUTE} "
            f"({MINUTE_BARS:,} 1m bars): {time.perf_counter() - started:.1f} s"
        )
        token = await new_user(RawHttp(base_url), "charts")
        floor = FloorPair(
            "charts_floor.py",
            floor_config(
                await asyncio.to_thread(jwks, base_url),
                platform.redis_url,
                platform.gateway_prefix,
                charts_dsn,
                platform.revocation_prefix,
            ),
        )
        await asyncio.to_thread(floor.start)
        pids = {"gateway": platform.pid("gateway"), "charts": platform.pid("charts")}
        pids |= {side: pid for side, pid in floor.pids().items()}
        pids["load generator"] = os.getpid()
        cpu = Cpu(pids, platform.postgres_dsn, charts_db)
        paths = {
            "gateway": ("gateway", "charts", "postgres"),
            "floor": ("floor HTTP", "floor gRPC", "postgres"),
        }
        print(
            f"{args.concurrency} clients each, on keep-alive connections; pages of {PAGE_LIMIT:,}; "
            f"{args.warmup:.0f} s warm-up, {args.duration:.0f} s measured; CPU in ms per page"
        )
        for chart in CHARTS:
            served = await walk(RawHttp(base_url), chart, token)
            bare = await walk(RawHttp(floor.url), chart, token)
            if served != bare:
                raise RuntimeError(f"{chart.name}: the floor answers otherwise than the gateway")
            candles = sum(len(page[chart.count]) for page in served)
            print(
                f"{chart.name}: {candles:,} candles in {len(served)} page(s), same JSON from both"
            )
            runs: dict[str, list[Run]] = {"gateway": [], "floor": []}
            for _ in range(args.rounds):
                for label, url in (("gateway", base_url), ("floor", floor.url)):
                    r = await measure(
                        url, chart, token, cpu, args.concurrency, args.warmup, args.duration
                    )
                    runs[label].append(r)
                    print(
                        f"  {label:7} {r.pages_per_s:7.1f} pages/s = "
                        f"{r.pages_per_s / len(served):6.2f} charts/s; CPU/page: {cpu_line(r)}"
                    )
            if args.py_spy:
                await profiled(Path(args.py_spy) / chart.name.split()[0], chart, token, cpu, args, {
                    base_url: {"gateway": pids["gateway"], "charts": pids["charts"]},
                    floor.url: {side: pids[side] for side in ("floor HTTP", "floor gRPC")},
                })  # fmt: skip
            rate = {k: statistics.mean(r.pages_per_s for r in v) for k, v in runs.items()}
            ratio = rate["gateway"] / rate["floor"]
            verdict = "ok" if ratio >= GOAL_READ_RATIO else "MISSED"
            work = {
                k: statistics.mean(sum(r.cpu_ms[p] for p in paths[k]) for r in v)
                for k, v in runs.items()
            }
            print(
                f"  gateway / floor: {ratio:.2f} (goal >= {GOAL_READ_RATIO}: {verdict}; means of "
                f"{args.rounds} runs each, alternated); CPU per page on the path "
                f"({' + '.join(paths['gateway'])} / {' + '.join(paths['floor'])}): "
                f"{work['gateway']:.1f} / {work['floor']:.1f} ms, floor / gateway "
                f"{work['floor'] / work['gateway']:.2f}"
            )
        floor.stop()
        floor = None
        await bench_import(fleet.endpoints, args.import_rows, args.py_spy)
    finally:
        if floor is not None:
            floor.stop()
        await asyncio.to_thread(platform.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=8, help="clients, service and floor")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--rounds", type=int, default=2, help="service, floor: alternated")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each")
    parser.add_argument("--py-spy", metavar="DIR", help="profile a further run of each side")
    parser.add_argument("--import-rows", type=int, default=500_000, help="rows of the import")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
