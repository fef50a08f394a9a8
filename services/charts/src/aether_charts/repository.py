"""Every query of the charts service (PostgreSQL, migrations/0001_init.sql).

Tables: `instruments` (one row per symbol), `bars` (partitioned by range on `time`, one
partition per UTC calendar year plus a default one; primary key (symbol, time)), `bar_rollups`
(hourly and daily candles of finer instruments), `datasets` (the bundled datasets already
loaded), and the live feed's (feed.py, replay.py).

Partitions are created on demand, before the transaction that writes the bars
(`ensure_partitions`, its own short transaction): `CREATE TABLE ... PARTITION OF` takes an
ACCESS EXCLUSIVE lock on `bars`, which must not be held for the length of a bulk load. An
advisory lock serialises creators; an empty partition left by a failed import is harmless.

Bulk writes COPY straight into `bars` when the range holds none of the symbol's bars
(`copy_bars`), else into a temporary table, then `INSERT ... SELECT` into `bars` (one
statement, conflicts resolved per the caller's choice); the rollups of the range follow
(`refresh_rollups`).

Candles are aggregated in SQL from the stored bars: intraday intervals with `date_bin` on a grid
from 2000-01-01 UTC, daily/weekly/monthly with `date_trunc(field, time, zone)` in the exchange's
time zone (weeks start on Monday). A candle is in the window when its start is; it aggregates
every bar of its interval. For an instrument stored finer than an hour or a day, coarse candles
are aggregated from `bar_rollups` instead (bars.rollup_for), which every write of bars keeps
equal to their aggregation. Only `bars` and its (symbol, time) key are named, so a TimescaleDB
hypertable (and `time_bucket`) can replace the partitioning without changing the queries.

The archive (migrations/0003_archive.sql, archive.py): `bars_archive` records each (symbol, UTC
year) whose bars moved to a Parquet object. A query whose window reaches an archived year reads
`bars` UNION ALL the temporary table `bars_archived` (the objects' bars loaded for this one
query, minus any time `bars` holds again): the same SQL, `FROM {source}`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aether_charts.bars import FIRST_YEAR, INTERVALS, RESOLUTIONS, ROLLUPS, Bar, Instrument, finer

Conn = Any  # an asyncpg connection

PARTITION_LOCK = zlib.crc32(b"aether.charts.bars.partitions")
DATASET_LOCK = zlib.crc32(b"aether.charts.datasets")


@dataclass(frozen=True, slots=True)
class Candle:
    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class InstrumentSummary:
    instrument: Instrument
    first_bar: datetime | None
    last_bar: datetime | None
    bars: int


# -- instruments -----------------------------------------------------------------------------------
_INSTRUMENT = "SELECT symbol, name, timezone, resolution, source FROM instruments WHERE symbol = $1"


async def instrument(conn: Conn, symbol: str) -> Instrument | None:
    row = await conn.fetchrow(_INSTRUMENT, symbol)
    return None if row is None else Instrument(*row)


async def cache_state(conn: Conn, symbol: str) -> tuple[int, datetime | None] | None:
    """The version of the symbol's bars and the start of the bar a feed builds (None: no feed);
    None for an unknown symbol."""
    row = await conn.fetchrow(
        "SELECT i.version, f.time FROM instruments i LEFT JOIN feed_open_bars f USING (symbol)"
        " WHERE i.symbol = $1",
        symbol,
    )
    return None if row is None else (row[0], row[1])


async def bump_versions(conn: Conn, symbols: Sequence[str]) -> None:
    """The symbols' bars changed (cache.py): in the transaction that changed them."""
    await conn.execute(
        "UPDATE instruments SET version = version + 1 WHERE symbol = ANY($1::text[])",
        list(symbols),
    )


async def lock_instrument(conn: Conn, symbol: str) -> Instrument | None:
    """The instrument, its row locked until the transaction ends (writers of its bars take
    turns)."""
    row = await conn.fetchrow(_INSTRUMENT + " FOR UPDATE", symbol)
    return None if row is None else Instrument(*row)


async def add_instruments(conn: Conn, instruments: Sequence[Instrument]) -> set[str]:
    """Insert the instruments that do not exist yet; the symbols inserted."""
    rows = await conn.fetch(
        """
        INSERT INTO instruments (symbol, name, timezone, resolution, source)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
        ON CONFLICT (symbol) DO NOTHING
        RETURNING symbol
        """,
        [i.symbol for i in instruments],
        [i.name for i in instruments],
        [i.timezone for i in instruments],
        [i.resolution for i in instruments],
        [i.source for i in instruments],
    )
    return {r["symbol"] for r in rows}


async def sourced_from(conn: Conn, source: str, symbols: Sequence[str]) -> set[str]:
    """Which of `symbols` belong to `source`."""
    rows = await conn.fetch(
        "SELECT symbol FROM instruments WHERE source = $1 AND symbol = ANY($2::text[])",
        source,
        list(symbols),
    )
    return {r["symbol"] for r in rows}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search_instruments(conn: Conn, q: str, limit: int) -> list[InstrumentSummary]:
    """Ticker prefix or name substring (case-insensitive); the exact ticker first."""
    pattern = _like_escape(q.strip())
    rows = await conn.fetch(
        """
        SELECT i.symbol, i.name, i.timezone, i.resolution, i.source,
               least(s.first, a.first) AS first, s.last, s.n + coalesce(a.n, 0) AS n
        FROM (
            -- The page is chosen first; only its instruments get their bar statistics.
            SELECT * FROM instruments
            WHERE symbol LIKE upper($1) || '%' OR lower(name) LIKE '%' || lower($1) || '%'
            ORDER BY symbol = upper($2) DESC, symbol
            LIMIT $3
        ) i
        CROSS JOIN LATERAL (
            SELECT min(time) AS first, max(time) AS last, count(*) AS n
            FROM bars b WHERE b.symbol = i.symbol
        ) s
        CROSS JOIN LATERAL (
            SELECT min(first_time) AS first, sum(rows) AS n
            FROM bars_archive a WHERE a.symbol = i.symbol
        ) a
        ORDER BY i.symbol = upper($2) DESC, i.symbol
        """,
        pattern,
        q.strip(),
        limit,
    )
    return [InstrumentSummary(Instrument(*r[:5]), r["first"], r["last"], int(r["n"])) for r in rows]


# -- bars ------------------------------------------------------------------------------------------
def partition_years(bars: Sequence[Bar]) -> set[int]:
    return {b.time.astimezone(UTC).year for b in bars}


async def ensure_partitions(conn: Conn, years: set[int]) -> list[str]:
    """Create the yearly partitions of `bars` that are missing (in the caller's transaction,
    which should be short: see the module docstring). The names created."""
    if not years:
        return []
    existing = {
        r["relname"]
        for r in await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'bars'::regclass"
        )
    }
    missing = sorted(y for y in years if f"bars_y{y}" not in existing)
    if not missing:
        return []
    await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
    created = []
    for year in missing:
        # Names and bounds come from integers: nothing of the caller's text reaches the SQL.
        name = f"bars_y{int(year)}"
        status = await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF bars "
            f"FOR VALUES FROM ('{int(year)}-01-01 00:00:00+00') "
            f"TO ('{int(year) + 1}-01-01 00:00:00+00')"
        )
        if status == "CREATE TABLE":
            created.append(name)
    return created


async def write_bars(
    conn: Conn,
    rows: Sequence[tuple[str, datetime, float, float, float, float, float]],
    *,
    replace: bool,
) -> int:
    """COPY rows into a temporary table, then into `bars` in one statement. `replace`: a bar
    already stored at the same (symbol, time) is overwritten; otherwise it is kept. The number
    of bars written."""
    await conn.execute(
        "CREATE TEMP TABLE bars_in (symbol text, time timestamptz, open float8, high float8,"
        " low float8, close float8, volume float8) ON COMMIT DROP"
    )
    await conn.copy_records_to_table("bars_in", records=rows)
    conflict = (
        "DO UPDATE SET open = excluded.open, high = excluded.high, low = excluded.low,"
        " close = excluded.close, volume = excluded.volume"
        if replace
        else "DO NOTHING"
    )
    status: str = await conn.execute(
        "INSERT INTO bars (symbol, time, open, high, low, close, volume)"  # noqa: S608
        " SELECT symbol, time, open, high, low, close, volume FROM bars_in"
        f" ON CONFLICT (symbol, time) {conflict}"
    )
    await conn.execute("DROP TABLE bars_in")
    return int(status.rsplit(" ", 1)[-1])


async def copy_bars(conn: Conn, symbol: str, records: Iterable[tuple[Any, ...]]) -> None:
    """COPY (symbol, time, open, high, low, close, volume) records straight into `bars`: for
    a time range that holds none of the symbol's bars yet (a conflict fails the COPY)."""
    await conn.copy_records_to_table(
        "bars",
        records=records,
        columns=["symbol", "time", "open", "high", "low", "close", "volume"],
    )


async def holds_bars(conn: Conn, symbol: str, start: datetime, end: datetime) -> bool:
    """Whether any bar of the symbol lies in [start, end]."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM bars WHERE symbol = $1 AND time >= $2 AND time <= $3)",
            symbol,
            start,
            end,
        )
    )


# Rollups (bars.ROLLUPS) of the candles that bars in [$2, $3] of the symbols $1 fall in,
# aggregated again from the stored bars (or those and the archived ones, `_BARS_AND_ARCHIVED`):
# the candle query's aggregation, for the instruments
# stored finer than the rollup. The range is widened to whole buckets (a bucket is at most a
# day and an hour long), then cut to the buckets it touches.
_REFRESH = """
INSERT INTO bar_rollups (symbol, interval, time, open, high, low, close, volume)
SELECT b.symbol, '{rollup}', {bucket},
       (array_agg(b.open ORDER BY b.time))[1], max(b.high), min(b.low),
       (array_agg(b.close ORDER BY b.time DESC))[1], sum(b.volume)
FROM {bars} b JOIN instruments i USING (symbol)
WHERE b.symbol = ANY($1::text[]) AND i.resolution IN ({finer})
  AND b.time >= $2::timestamptz - interval '25 hours'
  AND b.time < $3::timestamptz + interval '25 hours'
GROUP BY 1, 3
HAVING {bucket} + {span} > $2 AND {bucket} <= $3
ON CONFLICT (symbol, interval, time) DO UPDATE SET open = excluded.open, high = excluded.high,
    low = excluded.low, close = excluded.close, volume = excluded.volume
"""
# rollup -> (its bucket of b.time, the longest it can be)
_ROLLUP_BUCKET = {
    "1h": ("date_bin('1 hour', b.time, TIMESTAMPTZ '2000-01-01 00:00:00+00')", "'1 hour'"),
    "1d": ("date_trunc('day', b.time, i.timezone)", "'25 hours'"),  # a DST day
}


def _refresh_sql(rollup: str, bars: str = "bars") -> str:
    bucket, span = _ROLLUP_BUCKET[rollup]
    return _REFRESH.format(
        rollup=rollup,
        bars=bars,
        finer=", ".join(f"'{r}'" for r in RESOLUTIONS if finer(r, rollup)),
        span=f"interval {span}",
        bucket=bucket,
    )


_REFRESH_ROLLUPS = [_refresh_sql(r) for r in ROLLUPS]
# The stored bars and the archived ones loaded for this transaction (`attach_archived`).
_BARS_AND_ARCHIVED = (
    "(SELECT symbol, time, open, high, low, close, volume FROM bars"
    " UNION ALL SELECT symbol, time, open, high, low, close, volume FROM bars_archived)"
)
_REFRESH_ROLLUPS_ARCHIVED = [_refresh_sql(r, _BARS_AND_ARCHIVED) for r in ROLLUPS]


async def refresh_rollups(
    conn: Conn, symbols: Sequence[str], start: datetime, end: datetime
) -> None:
    """Aggregate again every rollup candle that holds a bar of `symbols` in [start, end] (in
    the transaction that wrote those bars)."""
    for sql in _REFRESH_ROLLUPS:
        await conn.execute(sql, list(symbols), start, end)


_TICK = """
INSERT INTO {table} AS t (symbol, {interval}time, open, high, low, close, volume)
VALUES ($1, {value}$2, $3, $3, $3, $3, $4)
ON CONFLICT (symbol, {interval}time) DO UPDATE SET
    high = greatest(t.high, excluded.high),
    low = least(t.low, excluded.low),
    close = CASE WHEN $5 THEN excluded.close ELSE t.close END,
    volume = t.volume + excluded.volume
"""
_TICK_BAR = _TICK.format(table="bars", interval="", value="")
_TICK_ROLLUP = _TICK.format(table="bar_rollups", interval="interval, ", value="$6, ")


async def add_tick(
    conn: Conn,
    symbol: str,
    bar: datetime,
    price: float,
    size: float,
    *,
    sets_close: bool,
    rollups: Sequence[tuple[str, datetime]] = (),
) -> None:
    """A traded price into the bar starting at `bar` (created at that price when missing),
    and into the `rollups` (interval, candle start) that hold it: high and low widen, volume
    adds `size`, and the close becomes `price` if `sets_close`."""
    await conn.execute(_TICK_BAR, symbol, bar, price, size, sets_close)
    for interval, start in rollups:
        await conn.execute(_TICK_ROLLUP, symbol, start, price, size, sets_close, interval)


# -- candles ---------------------------------------------------------------------------------------
_WITH_ARCHIVED = f"{_BARS_AND_ARCHIVED} AS bars"
_CANDLES = """
WITH b AS (
    SELECT {bucket} AS bucket, time, open, high, low, close, volume
    FROM {source}
    WHERE symbol = $1 AND time >= $2 AND time < $3
)
SELECT bucket,
       (array_agg(open ORDER BY time))[1]       AS open,
       max(high)                                AS high,
       min(low)                                 AS low,
       (array_agg(close ORDER BY time DESC))[1] AS close,
       sum(volume)                              AS volume
FROM b
WHERE bucket >= $2 AND bucket < $4
GROUP BY bucket
ORDER BY bucket
LIMIT $5
"""
_BIN = "date_bin($6::interval, time, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
_TRUNC = "date_trunc($6::text, time, $7::text)"
# Where candles are aggregated from: the stored bars, or one rollup (names from ROLLUPS only).
_SOURCES: dict[str | None, str] = {None: "bars"} | {
    r: f"(SELECT * FROM bar_rollups WHERE interval = '{r}') AS rollup"  # noqa: S608
    for r in ROLLUPS
}
CANDLES_BIN = {k: _CANDLES.format(bucket=_BIN, source=v) for k, v in _SOURCES.items()}
CANDLES_TRUNC = {k: _CANDLES.format(bucket=_TRUNC, source=v) for k, v in _SOURCES.items()}
ARCHIVED_CANDLES_BIN = _CANDLES.format(bucket=_BIN, source=_WITH_ARCHIVED)
ARCHIVED_CANDLES_TRUNC = _CANDLES.format(bucket=_TRUNC, source=_WITH_ARCHIVED)


async def candles(
    conn: Conn,
    symbol: str,
    interval: str,
    timezone: str,
    *,
    start: datetime,
    end: datetime,
    reach: timedelta,
    limit: int,
    rollup: str | None = None,
    archived: bool = False,
) -> list[Candle]:
    """Candles whose start is in [start, end), oldest first, at most `limit`, aggregated from
    the stored bars or from `rollup`'s candles. Rows are read up to `end + reach`, so that the
    last candle is whole. `archived` (bars only): over `bars_archived` too."""
    width = INTERVALS[interval]
    if isinstance(width, timedelta):
        sql = ARCHIVED_CANDLES_BIN if archived else CANDLES_BIN[rollup]
        rows = await conn.fetch(sql, symbol, start, end + reach, end, limit, width)
    else:
        sql = ARCHIVED_CANDLES_TRUNC if archived else CANDLES_TRUNC[rollup]
        rows = await conn.fetch(sql, symbol, start, end + reach, end, limit, width, timezone)
    return [Candle(*r) for r in rows]


_BAR = "SELECT time, open, high, low, close, volume FROM bars"
_NO_EARLIER = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)


async def bars_after(conn: Conn, symbol: str, after: datetime | None, limit: int) -> list[Bar]:
    """The stored bars after `after` (from the first when None), oldest first, at most `limit`."""
    rows = await conn.fetch(
        f"{_BAR} WHERE symbol = $1 AND time > $2 ORDER BY time LIMIT $3",
        symbol,
        after or _NO_EARLIER,
        limit,
    )
    return [Bar(*r) for r in rows]


async def bar_at(conn: Conn, symbol: str, time: datetime) -> Bar | None:
    row = await conn.fetchrow(f"{_BAR} WHERE symbol = $1 AND time = $2", symbol, time)
    return None if row is None else Bar(*row)


_BEFORE = (
    "SELECT min(time), count(*) FROM (SELECT time FROM {source} WHERE symbol = $1 AND time < $2"
    " ORDER BY time DESC LIMIT $3) AS earlier"
)


async def time_before(
    conn: Conn, symbol: str, before: datetime, bars: int, *, rollup: str | None = None
) -> datetime | None:
    """The time of the `bars`-th stored bar (or `rollup` candle) before `before` (the earliest
    one when fewer)."""
    found: datetime | None = await conn.fetchval(
        f"SELECT min(time) FROM (SELECT time FROM {_SOURCES[rollup]}"  # noqa: S608
        " WHERE symbol = $1 AND time < $2 ORDER BY time DESC LIMIT $3) AS earlier",
        symbol,
        before,
        bars,
    )
    return found


async def bars_before(
    conn: Conn, symbol: str, before: datetime, bars: int, *, archived: bool = False
) -> tuple[datetime | None, int]:
    """The time of the `bars`-th bar before `before` (the earliest one when fewer), and how
    many were counted (`bars` at most). `archived`: over `bars_archived` too."""
    row = await conn.fetchrow(
        _BEFORE.format(source=_WITH_ARCHIVED if archived else "bars"), symbol, before, bars
    )
    return row[0], int(row[1])


# -- the archive -----------------------------------------------------------------------------------
ARCHIVE_LOCK = zlib.crc32(b"aether.charts.archive")
BarRow = tuple[datetime, float, float, float, float, float]  # time, open, high, low, close, volume


@dataclass(frozen=True, slots=True)
class ArchivedYear:
    """A (symbol, UTC year) whose bars are in the Parquet object `key` (bars_archive)."""

    symbol: str
    year: int
    key: str
    rows: int
    first_time: datetime
    last_time: datetime
    sha256: str


_ARCHIVED = "SELECT symbol, year, key, rows, first_time, last_time, sha256 FROM bars_archive"


def year_bounds(year: int) -> tuple[datetime, datetime]:
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)


async def archived_years(
    conn: Conn, symbol: str, start: datetime, end: datetime
) -> list[ArchivedYear]:
    """The archived years of `symbol` holding bars in [start, end), oldest first."""
    rows = await conn.fetch(
        f"{_ARCHIVED} WHERE symbol = $1 AND last_time >= $2 AND first_time < $3 ORDER BY year",
        symbol,
        start,
        end,
    )
    return [ArchivedYear(*r) for r in rows]


async def archived_before(conn: Conn, symbol: str, before: datetime) -> list[ArchivedYear]:
    """The archived years of `symbol` holding bars before `before`, newest first."""
    rows = await conn.fetch(
        f"{_ARCHIVED} WHERE symbol = $1 AND first_time < $2 ORDER BY year DESC", symbol, before
    )
    return [ArchivedYear(*r) for r in rows]


async def archived_year(conn: Conn, symbol: str, year: int) -> ArchivedYear | None:
    row = await conn.fetchrow(f"{_ARCHIVED} WHERE symbol = $1 AND year = $2", symbol, year)
    return None if row is None else ArchivedYear(*row)


async def attach_archived(conn: Conn, symbol: str, rows: Sequence[BarRow]) -> None:
    """Load archived bars of `symbol` into `bars_archived` for the queries that follow (inside
    the caller's transaction; `detach_archived` drops it). A time that `bars` holds again (a
    later import into an archived year, not archived yet) is dropped: the stored bar wins."""
    await conn.execute(
        "CREATE TEMP TABLE bars_archived (symbol text, time timestamptz, open float8,"
        " high float8, low float8, close float8, volume float8) ON COMMIT DROP"
    )
    await conn.copy_records_to_table("bars_archived", records=[(symbol, *r) for r in rows])
    if rows:
        await conn.execute(
            "DELETE FROM bars_archived a USING bars b WHERE b.symbol = $1 AND b.time = a.time"
            " AND b.time >= $2 AND b.time <= $3",
            symbol,
            min(r[0] for r in rows),
            max(r[0] for r in rows),
        )


async def detach_archived(conn: Conn) -> None:
    await conn.execute("DROP TABLE IF EXISTS bars_archived")


async def refresh_archived_rollups(conn: Conn, symbol: str, rows: Sequence[BarRow]) -> None:
    """Aggregate again the rollups of the buckets `rows` touch, over `bars` and the attached
    `bars_archived`: bars written into an archived year refreshed them from `bars` alone,
    which then held only those bars of the bucket."""
    if not rows:
        return
    times = [r[0] for r in rows]
    for sql in _REFRESH_ROLLUPS_ARCHIVED:
        await conn.execute(sql, [symbol], min(times), max(times))


async def try_lock_archive(conn: Conn) -> bool:
    """One archiver at a time across replicas: a session lock, on a dedicated connection (the
    run uploads between its transactions)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", ARCHIVE_LOCK))


async def unlock_archive(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", ARCHIVE_LOCK)


async def latest_bars(conn: Conn) -> list[tuple[str, datetime]]:
    """Each instrument with bars, and the time of its latest bar (the archive's clock)."""
    rows = await conn.fetch(
        "SELECT symbol, last FROM (SELECT i.symbol,"
        " (SELECT max(time) FROM bars b WHERE b.symbol = i.symbol) AS last FROM instruments i)"
        " AS latest WHERE last IS NOT NULL ORDER BY symbol"
    )
    return [(r["symbol"], r["last"]) for r in rows]


async def bar_years(conn: Conn, symbol: str, before: datetime) -> list[int]:
    """The UTC years in which `symbol` has stored bars before `before`."""
    rows = await conn.fetch(
        "SELECT DISTINCT date_part('year', time AT TIME ZONE 'UTC')::int AS year FROM bars"
        " WHERE symbol = $1 AND time < $2 ORDER BY year",
        symbol,
        before,
    )
    return [int(r["year"]) for r in rows]


async def year_bars(conn: Conn, symbol: str, year: int) -> list[BarRow]:
    """The stored bars of `symbol` in a UTC year, oldest first."""
    low, high = year_bounds(year)
    rows = await conn.fetch(
        "SELECT time, open, high, low, close, volume FROM bars"
        " WHERE symbol = $1 AND time >= $2 AND time < $3 ORDER BY time",
        symbol,
        low,
        high,
    )
    return [tuple(r) for r in rows]


async def delete_archived_bars(conn: Conn, symbol: str, year: int, rows: Sequence[BarRow]) -> int:
    """Delete the stored bars equal (time and every value) to `rows`, which the archive holds.
    A bar written since they were read (a new time, or new values) stays, for the next run.
    The number deleted."""
    low, high = year_bounds(year)
    await conn.execute(
        "CREATE TEMP TABLE bars_out (time timestamptz, open float8, high float8, low float8,"
        " close float8, volume float8) ON COMMIT DROP"
    )
    await conn.copy_records_to_table("bars_out", records=rows)
    status: str = await conn.execute(
        "DELETE FROM bars b USING bars_out o WHERE b.symbol = $1 AND b.time >= $2"
        " AND b.time < $3 AND b.time = o.time AND b.open = o.open AND b.high = o.high"
        " AND b.low = o.low AND b.close = o.close AND b.volume = o.volume",
        symbol,
        low,
        high,
    )
    await conn.execute("DROP TABLE bars_out")
    return int(status.rsplit(" ", 1)[-1])


async def record_archived(conn: Conn, year: ArchivedYear) -> None:
    await conn.execute(
        "INSERT INTO bars_archive (symbol, year, key, rows, first_time, last_time, sha256)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (symbol, year) DO UPDATE SET"
        " key = excluded.key, rows = excluded.rows, first_time = excluded.first_time,"
        " last_time = excluded.last_time, sha256 = excluded.sha256, archived_at = now()",
        year.symbol,
        year.year,
        year.key,
        year.rows,
        year.first_time,
        year.last_time,
        year.sha256,
    )


@dataclass(frozen=True, slots=True)
class Session:
    """A symbol's last session (from `start`): its open, high, low, volume and last bar, and
    the close before it."""

    start: datetime
    last_time: datetime
    last_close: float
    open: float
    high: float
    low: float
    volume: float
    previous_close: float | None


async def last_bar_time(conn: Conn, symbol: str) -> datetime | None:
    found: datetime | None = await conn.fetchval(
        "SELECT time FROM bars WHERE symbol = $1 ORDER BY time DESC LIMIT 1", symbol
    )
    return found


async def session(conn: Conn, symbol: str, start: datetime) -> Session:
    """The bars of `symbol` from `start` on (at least one exists), and the close before."""
    row = await conn.fetchrow(
        """
        SELECT max(time)                                AS last_time,
               (array_agg(close ORDER BY time DESC))[1] AS last_close,
               (array_agg(open ORDER BY time))[1]       AS open,
               max(high)                                AS high,
               min(low)                                 AS low,
               sum(volume)                              AS volume,
               (SELECT close FROM bars WHERE symbol = $1 AND time < $2
                ORDER BY time DESC LIMIT 1)             AS previous_close
        FROM bars WHERE symbol = $1 AND time >= $2
        """,
        symbol,
        start,
    )
    return Session(start, *row)


# -- datasets --------------------------------------------------------------------------------------
async def lock_datasets(conn: Conn) -> None:
    """One loader at a time (replicas starting together): held until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", DATASET_LOCK)


async def dataset_loaded(conn: Conn, name: str, version: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM datasets WHERE name = $1 AND version = $2)",
            name,
            version,
        )
    )


async def record_dataset(conn: Conn, name: str, version: str, symbols: int, bars: int) -> bool:
    status: str = await conn.execute(
        "INSERT INTO datasets (name, version, symbols, bars) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING",
        name,
        version,
        symbols,
        bars,
    )
    return status.endswith(" 1")
