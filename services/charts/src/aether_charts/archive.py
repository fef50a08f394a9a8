"""Retention: bars older than `CHARTS_RETENTION_YEARS` leave PostgreSQL for Parquet objects in
S3, never deleted silently (services/charts/README.md, "Retention and the archive").

The clock is the data's, per instrument: a whole UTC year is archived when it ends at or
before the instrument's latest stored bar minus N years. For a symbol fed live that is the
wall clock; the bundled history (bokeh's AAPL 2000-2013) keeps its latest N years in the
database instead of leaving it all in the archive on the first run.

One object per (symbol, UTC year): `market-archive/bars/<SYMBOL>/<year>.parquet`. A year is
moved in this order, so that a crash anywhere loses nothing:

1. read the year's bars (and, when the year was archived before and bars came back into it, the
   object's bars: the stored bar wins at the same time);
2. write the object (an overwrite of the same key: a rerun after a crash writes it again),
   read it back and compare its sha256 and its rows;
3. one PostgreSQL transaction deletes exactly the bars written (time and every value; a bar
   written meanwhile stays for the next run) and records the year in `bars_archive`.

Between 2 and 3 the bars are in both places; a query dedupes them (archive_reader.py).
A session advisory lock on a dedicated connection makes one replica archive at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq

from aether_charts import repository
from aether_charts.metrics import ARCHIVED_BARS
from aether_charts.repository import ArchivedYear, BarRow, Conn
from aether_common.errors import NotFound
from aether_common.logging import get_logger
from aether_common.periodic import Periodic
from aether_common.postgres import PostgresDatabase
from aether_common.s3 import S3Bucket

log = get_logger(__name__)

PREFIX = "market-archive/bars"
CONTENT_TYPE = "application/vnd.apache.parquet"
SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
    ]
)


class ArchiveError(RuntimeError):
    """An object that is not what was written or recorded: nothing is deleted because of it."""


def object_key(symbol: str, year: int) -> str:
    return f"{PREFIX}/{symbol}/{int(year)}.parquet"


def encode(symbol: str, year: int, rows: Sequence[BarRow]) -> bytes:
    """A Parquet file of bars (oldest first); the symbol and year in its metadata."""
    columns: list[Sequence[object]] = list(zip(*rows, strict=True)) or [[] for _ in SCHEMA]
    table = pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, SCHEMA, strict=True)],
        schema=SCHEMA.with_metadata({"symbol": symbol, "year": str(year)}),
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def decode(data: bytes) -> list[BarRow]:
    table = pq.read_table(io.BytesIO(data), schema=SCHEMA)
    times = table.column("time").to_pylist()
    values = [table.column(name).to_pylist() for name in ("open", "high", "low", "close", "volume")]
    return [(t, *v) for t, *v in zip(times, *values, strict=True)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def horizon(latest: datetime, years: int) -> datetime:
    """`years` calendar years before `latest` (29 February: the 28th)."""
    year = latest.year - years
    try:
        return latest.replace(year=year)
    except ValueError:
        return latest.replace(year=year, day=28)


def archivable_before(latest: datetime, years: int) -> datetime:
    """Bars before this are archived: the start of the UTC year the horizon is in, so only
    whole years entirely before the horizon go."""
    return datetime(horizon(latest, years).astimezone(UTC).year, 1, 1, tzinfo=UTC)


async def fetch_year(bucket: S3Bucket, year: ArchivedYear) -> list[BarRow]:
    """An archived year's bars, from its object. An object with fewer rows than recorded is
    refused. More is allowed: a run that merged bars back into the year wrote it, then stopped
    before recording (those bars are still in `bars`, which wins)."""
    try:
        data = await bucket.get(year.key)
    except NotFound:  # not the caller's mistake: the archive lost an object
        raise ArchiveError(f"{year.key} is recorded in bars_archive but missing") from None
    rows = await asyncio.to_thread(decode, data)
    if len(rows) < year.rows:
        raise ArchiveError(
            f"{year.key} holds {len(rows)} bars, {year.rows} recorded: not the archived object"
        )
    return rows


class Archiver(Periodic):
    """Moves the bars beyond retention to the archive, every `interval_s` (a Component)."""

    name = "charts-archiver"

    def __init__(
        self,
        database: PostgresDatabase,
        bucket: S3Bucket,
        *,
        retention_years: int,
        interval_s: float,
    ) -> None:
        super().__init__(interval_s=interval_s)
        self._db = database
        self._bucket = bucket
        self._years = retention_years

    async def start(self) -> None:
        if self.interval_s > 0:  # 0: this replica does not archive
            await super().start()

    async def ready(self) -> bool:
        return self.interval_s == 0 or await super().ready()

    async def run_once(self) -> int:
        """Archive every whole year beyond retention; the number of bars that left `bars`
        (0 when another replica is archiving)."""
        lock: Conn = await asyncpg.connect(self._db.dsn)
        try:
            if not await repository.try_lock_archive(lock):
                log.info("another replica is archiving")
                return 0
            try:
                return await self._run()
            finally:
                await repository.unlock_archive(lock)
        finally:
            await lock.close()

    async def _run(self) -> int:
        async with self._db.connection() as conn:
            due: list[tuple[str, int]] = []
            for symbol, latest in await repository.latest_bars(conn):
                before = archivable_before(latest, self._years)
                due += [(symbol, y) for y in await repository.bar_years(conn, symbol, before)]
        moved = 0
        for symbol, year in due:
            moved += await self.archive_year(symbol, year)
        if moved:
            log.info("bars archived", bars=moved, years=len(due))
        return moved

    async def archive_year(self, symbol: str, year: int) -> int:
        """Move one (symbol, UTC year) to its object (the module docstring's order); the
        number of bars deleted from `bars`."""
        async with self._db.connection() as conn:
            stored = await repository.year_bars(conn, symbol, year)
            known = await repository.archived_year(conn, symbol, year)
        if not stored:
            return 0
        rows = stored
        if known is not None:  # bars came back into an archived year: one object again
            kept = {row[0]: row for row in await fetch_year(self._bucket, known)}
            kept.update((row[0], row) for row in stored)
            rows = [kept[t] for t in sorted(kept)]
        key = object_key(symbol, year)
        data = await asyncio.to_thread(encode, symbol, year, rows)
        digest = sha256(data)
        await self._bucket.put(key, data, content_type=CONTENT_TYPE)
        back = await self._bucket.get(key)
        if sha256(back) != digest or await asyncio.to_thread(decode, back) != rows:
            raise ArchiveError(f"{key} read back differs from what was written; nothing deleted")
        record = ArchivedYear(symbol, year, key, len(rows), rows[0][0], rows[-1][0], digest)

        async def commit(conn: Conn) -> int:
            if known is not None:  # the rollups of the bars that came back: over the whole year
                await repository.attach_archived(conn, symbol, rows)
                await repository.refresh_archived_rollups(conn, symbol, stored)
                await repository.detach_archived(conn)
                # Answers over those rollups may change: cached ones are not served again
                # (cache.py). A first archiving changes no answer and keeps them.
                await repository.bump_versions(conn, [symbol])
            deleted = await repository.delete_archived_bars(conn, symbol, year, stored)
            await repository.record_archived(conn, record)
            return deleted

        deleted = await self._db.transaction(lambda uow: commit(uow.conn))
        ARCHIVED_BARS.inc(deleted)
        log.info("year archived", symbol=symbol, year=year, key=key, rows=len(rows))
        return deleted
