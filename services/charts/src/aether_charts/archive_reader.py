"""Reads that reach into the archive (archive.py): candles and warm-up counts over the stored
bars and, when the window touches archived years, those years' objects too.

The common path is the usual query naming only `bars`, then one lookup in the small
`bars_archive` table (in that order: `candles` says why). When archived years overlap, their
objects are fetched (no transaction is open during S3 calls), then one transaction loads them
into the temporary table `bars_archived` and runs the same candle SQL over
`bars UNION ALL bars_archived` (repository.py): one aggregation, whichever side a bar is on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from aether_charts import repository
from aether_charts.archive import fetch_year
from aether_charts.metrics import ARCHIVE_READS
from aether_charts.repository import ArchivedYear, BarRow, Candle, Conn
from aether_common.s3 import S3Bucket


class ArchiveReader:
    """`cache_rows`: archived bars kept in memory between requests (least recently used
    objects dropped first), keyed by object and sha256, so a rewritten year is fetched anew."""

    def __init__(self, bucket: S3Bucket, *, cache_rows: int = 0) -> None:
        self._bucket = bucket
        self._cache: OrderedDict[tuple[str, str], list[BarRow]] = OrderedDict()
        self._cache_rows = cache_rows
        self._cached = 0

    async def candles(
        self,
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
    ) -> list[Candle]:
        """repository.candles, over the archived bars as well when the window reaches them.
        Rollups stay in the database for archived years: a rollup's candles are read as they
        are.

        The stored bars are read first, then `bars_archive` is checked: a year archived in
        between (its bars deleted and its record added in one transaction) is then seen and
        the window read again with it. Checking first could miss both sides."""
        stored = await repository.candles(
            conn,
            symbol,
            interval,
            timezone,
            start=start,
            end=end,
            reach=reach,
            limit=limit,
            rollup=rollup,
        )
        if rollup is not None:
            return stored
        years = await repository.archived_years(conn, symbol, start, end + reach)
        if not years:
            return stored
        rows = await self._fetch(years, {})
        async with _attached(conn, symbol, rows):
            return await repository.candles(
                conn,
                symbol,
                interval,
                timezone,
                start=start,
                end=end,
                reach=reach,
                limit=limit,
                archived=True,
            )

    async def time_before(
        self, conn: Conn, symbol: str, before: datetime, bars: int, *, rollup: str | None = None
    ) -> datetime | None:
        """repository.time_before, counting archived bars when the stored ones run out: the
        newest archived years first, one more each time until `bars` are counted (or none is
        left). Stored bars first, as in `candles`; a rollup's candles as they are."""
        if rollup is not None:
            return await repository.time_before(conn, symbol, before, bars, rollup=rollup)
        found, counted = await repository.bars_before(conn, symbol, before, bars)
        if counted >= bars:
            return found
        years = await repository.archived_before(conn, symbol, before)
        fetched: dict[str, list[BarRow]] = {}
        wanted, held = 0, bars - counted
        while wanted < len(years):
            # Enough years to hold the missing count by their recorded rows; more if short.
            while wanted < len(years) and held > 0:
                held -= years[wanted].rows
                wanted += 1
            held = 1
            rows = await self._fetch(years[:wanted], fetched)
            async with _attached(conn, symbol, rows):
                found, counted = await repository.bars_before(
                    conn, symbol, before, bars, archived=True
                )
            if counted >= bars:
                break
        return found

    async def _fetch(
        self, years: Sequence[ArchivedYear], fetched: dict[str, list[BarRow]]
    ) -> list[BarRow]:
        """The bars of `years`' objects (those in `fetched` not fetched again)."""
        out: list[BarRow] = []
        for year in years:
            if year.key not in fetched:
                fetched[year.key] = await self._year(year)
            out += fetched[year.key]
        return out

    async def _year(self, year: ArchivedYear) -> list[BarRow]:
        key = (year.key, year.sha256)
        rows = self._cache.get(key)
        if rows is not None:
            self._cache.move_to_end(key)
            ARCHIVE_READS.labels("cached").inc()
            return rows
        rows = await fetch_year(self._bucket, year)
        ARCHIVE_READS.labels("fetched").inc()
        if len(rows) <= self._cache_rows and key not in self._cache:
            self._cache[key] = rows
            self._cached += len(rows)
            while self._cached > self._cache_rows:
                _, dropped = self._cache.popitem(last=False)
                self._cached -= len(dropped)
        return rows


@asynccontextmanager
async def _attached(conn: Conn, symbol: str, rows: list[BarRow]) -> AsyncIterator[None]:
    """`bars_archived` holds `rows` inside one transaction (a savepoint in the caller's). On an
    error the rollback removes it: a DROP in the aborted transaction would hide the error."""
    async with conn.transaction():
        await repository.attach_archived(conn, symbol, rows)
        yield
        await repository.detach_archived(conn)
