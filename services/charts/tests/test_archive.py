"""Retention: bars beyond CHARTS_RETENTION_YEARS (by the instrument's own latest bar) move to
Parquet objects in the archive bucket, and every read answers as before. Real PostgreSQL and
S3 (moto_server); the archiver runs by hand (`run_once`), its timer off.

bokeh's AAPL runs 2000-03-01 .. 2013-03-01: the horizon is 2003-03-01, so 2000, 2001 and 2002
(whole UTC years before it) are archived and 2003 .. 2013 stay.
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pyarrow.parquet as pq
import pytest
from google.protobuf import timestamp_pb2
from prometheus_client import REGISTRY

from aether.charts.v1 import charts_pb2
from aether_charts import archive, repository
from aether_charts.datasets import Dataset, read_bokeh
from aether_devstack.servers import free_port
from aether_devstack.testkit import failure

CUT = datetime(2003, 1, 1, tzinfo=UTC)
ARCHIVED = [2000, 2001, 2002]
INDICATORS = "sma:20,ema:50,rsi:14,macd:12:26:9,bbands:20:2,atr:14,stoch,obv"


def aapl() -> Dataset:
    return Dataset(
        "bokeh-sampledata",
        lambda: [s for s in read_bokeh() if s.instrument.symbol == "AAPL"],
    )


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def start(start_charts: Any) -> Any:
    """AAPL loaded; the response cache off, so that every read runs the queries (archiving
    changes no answer: with it on, the same request is answered from it, as it should be)."""
    charts = await start_charts(datasets=(aapl(),), archive_interval_s=0, cache_enabled=False)
    await charts.app.loader.done()
    return charts


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def plain(candles: Any) -> list[tuple[Any, ...]]:
    return [(c.time.ToDatetime(), c.open, c.high, c.low, c.close, c.volume) for c in candles]


async def everything(charts: Any) -> dict[str, Any]:
    """What the service answers about AAPL, over windows that reach the archived years."""
    out: dict[str, Any] = {}
    for interval in ("1d", "1w", "1M"):
        out[interval] = plain(await charts.all_candles("AAPL", interval=interval, limit=10_000))
    # A window across the boundary, and the latest 300 days before 2003-06-01 (counted back
    # from `to` into the archive).
    out["boundary"] = plain(
        await charts.all_candles(
            "AAPL",
            interval="1w",
            **{"from": ts(datetime(2002, 11, 1, tzinfo=UTC)), "to": ts(datetime(2003, 3, 1))},
        )
    )
    latest = await charts.candles(
        "AAPL", interval="1d", latest=True, limit=300, to=ts(datetime(2003, 6, 1, tzinfo=UTC))
    )
    out["latest"] = plain(latest.candles)
    found = await charts.stub.ListSymbols(
        charts_pb2.ListSymbolsRequest(q="AAPL"), metadata=charts.auth("u")
    )
    summary = found.instruments[0]
    out["summary"] = (summary.first_bar.ToDatetime(), summary.last_bar.ToDatetime(), summary.bars)
    return out


async def indicator_values(charts: Any) -> list[Any]:
    """Indicators on pages right after the archived years: their warm-up reads those years."""
    out = []
    for interval, since in (("1d", datetime(2003, 1, 1)), ("1w", datetime(2003, 6, 1))):
        request = charts_pb2.GetIndicatorsRequest(
            symbol="AAPL", interval=interval, indicators=INDICATORS, limit=60
        )
        getattr(request, "from").CopyFrom(ts(since.replace(tzinfo=UTC)))
        answer = await charts.stub.GetIndicators(request, metadata=charts.auth("reader"))
        out.append(
            [(s.indicator, s.output, list(s.values)) for s in answer.series]
            + [t.ToDatetime() for t in answer.times]
        )
    return out


def reads(outcome: str) -> float:
    value = REGISTRY.get_sample_value("aether_charts_archive_reads_total", {"outcome": outcome})
    return value or 0.0


async def stored_before_cut(dsn: str) -> int:
    rows = await fetch(dsn, "SELECT count(*) FROM bars WHERE symbol = 'AAPL' AND time < $1", CUT)
    return int(rows[0][0])


async def test_old_years_move_to_the_archive_and_still_chart(
    start_charts: Any, pg_dsn: str
) -> None:
    charts = await start(start_charts)
    before = await everything(charts)
    old = await stored_before_cut(pg_dsn)
    assert old > 600  # 2000-03 .. 2002-12: about 710 trading days

    assert await charts.app.archiver.run_once() == old

    assert await stored_before_cut(pg_dsn) == 0
    records = await fetch(pg_dsn, "SELECT * FROM bars_archive ORDER BY year")
    assert [r["year"] for r in records] == ARCHIVED
    assert sum(r["rows"] for r in records) == old
    for record in records:
        assert record["key"] == f"market-archive/bars/AAPL/{record['year']}.parquet"
        data = await charts.app.archive_bucket.get(record["key"])
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
        # A plain Parquet file anyone can read: time (UTC) and the five values.
        table = pq.read_table(io.BytesIO(data))
        assert table.column_names == ["time", "open", "high", "low", "close", "volume"]
        assert table.num_rows == record["rows"]
        times = table.column("time").to_pylist()
        assert (times[0], times[-1]) == (record["first_time"], record["last_time"])
        assert {t.year for t in times} == {record["year"]}

    fetched, cached = reads("fetched"), reads("cached")
    assert await everything(charts) == before
    # Each object fetched once, then answered from memory.
    assert (reads("fetched") - fetched, reads("cached") > cached) == (len(ARCHIVED), True)
    # Idempotent: nothing new to archive, the records untouched.
    assert await charts.app.archiver.run_once() == 0
    assert await fetch(pg_dsn, "SELECT * FROM bars_archive ORDER BY year") == records


async def test_indicators_warm_up_from_the_archive(start_charts: Any) -> None:
    charts = await start(start_charts)
    before = await indicator_values(charts)
    assert await charts.app.archiver.run_once() > 0
    assert await indicator_values(charts) == before


async def test_a_crash_between_upload_and_commit_loses_nothing(
    start_charts: Any, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    charts = await start(start_charts)
    before = await everything(charts)
    old = await stored_before_cut(pg_dsn)

    async def crash(conn: Any, year: Any) -> None:
        raise RuntimeError("the process died here")

    # Fails inside the transaction, after its DELETE: the object is written, nothing commits.
    monkeypatch.setattr(repository, "record_archived", crash)
    with pytest.raises(RuntimeError, match="died"):
        await charts.app.archiver.run_once()
    assert await charts.app.archive_bucket.exists("market-archive/bars/AAPL/2000.parquet")
    assert await stored_before_cut(pg_dsn) == old
    assert await fetch(pg_dsn, "SELECT * FROM bars_archive") == []
    assert await everything(charts) == before

    monkeypatch.undo()
    assert await charts.app.archiver.run_once() == old
    assert await stored_before_cut(pg_dsn) == 0
    assert len(await fetch(pg_dsn, "SELECT * FROM bars_archive")) == len(ARCHIVED)
    assert await everything(charts) == before


async def test_a_young_instrument_keeps_every_bar(charts: Any, pg_dsn: str) -> None:
    rows = ["time,open,high,low,close,volume"]
    rows += [f"{year}-06-03,100,110,95,105,1000" for year in range(2015, 2025)]  # 9 years apart
    await charts.import_bars("YOUNG", "\n".join(rows) + "\n", timezone="America/New_York")
    assert await charts.app.archiver.run_once() == 0
    assert await fetch(pg_dsn, "SELECT * FROM bars_archive") == []
    count = await fetch(pg_dsn, "SELECT count(*) FROM bars WHERE symbol = 'YOUNG'")
    assert count[0][0] == 10


async def test_bars_imported_into_an_archived_year(
    start_charts: Any, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import into an archived year: the stored bar wins at once (no duplicate), and the
    next run merges it into the year's object, even after a crash in the middle of that run
    (the object then holds more than recorded, the stored bar still wins)."""
    charts = await start(start_charts)
    await charts.app.archiver.run_once()
    (record,) = await fetch(pg_dsn, "SELECT * FROM bars_archive WHERE year = 2001")
    day = {"from": ts(datetime(2001, 6, 1, tzinfo=UTC)), "to": ts(datetime(2001, 6, 2))}
    (was,) = (await charts.candles("AAPL", interval="1d", **day)).candles
    june = {"from": day["from"], "limit": 1}
    (month,) = (await charts.candles("AAPL", interval="1M", **june)).candles

    csv = f"time,open,high,low,close,volume\n2001-06-01,{was.open},{was.high},{was.low},"
    await charts.import_bars("AAPL", csv + f"{was.close},123\n")
    (now,) = (await charts.candles("AAPL", interval="1d", **day)).candles
    assert (now.close, now.volume) == (was.close, 123)
    (june_now,) = (await charts.candles("AAPL", interval="1M", **june)).candles
    assert june_now.volume == month.volume - was.volume + 123  # the archived bar not counted

    async def crash(conn: Any, year: Any) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(repository, "record_archived", crash)
    with pytest.raises(RuntimeError, match="died"):
        await charts.app.archiver.run_once()
    monkeypatch.undo()
    (still,) = (await charts.candles("AAPL", interval="1M", **june)).candles
    assert still == june_now

    assert await charts.app.archiver.run_once() == 1
    (merged,) = await fetch(pg_dsn, "SELECT * FROM bars_archive WHERE year = 2001")
    assert merged["rows"] == record["rows"]
    assert merged["sha256"] != record["sha256"]
    assert await stored_before_cut(pg_dsn) == 0
    (after,) = (await charts.candles("AAPL", interval="1d", **day)).candles
    assert after.volume == 123


def test_the_horizon_keeps_whole_years() -> None:
    latest = datetime(2013, 3, 1, 5, tzinfo=UTC)
    assert archive.archivable_before(latest, 10) == CUT
    # A leap day's horizon is the 28th; a year ending exactly at the horizon goes.
    assert archive.horizon(datetime(2024, 2, 29, tzinfo=UTC), 10) == datetime(
        2014, 2, 28, tzinfo=UTC
    )
    assert archive.archivable_before(datetime(2024, 1, 1, tzinfo=UTC), 10) == datetime(
        2014, 1, 1, tzinfo=UTC
    )


async def test_the_archive_store_away_is_unavailable_for_archived_years_only(
    start_charts: Any,
) -> None:
    charts = await start(start_charts)
    await charts.app.archiver.run_once()
    # The archive's S3 server goes away: its client reconnects to a port nothing listens on.
    bucket = charts.app.archive_bucket
    await bucket.stop()
    bucket._endpoints["calls"] = f"http://127.0.0.1:{free_port()}"
    recent = {"from": ts(datetime(2010, 1, 1, tzinfo=UTC)), "to": ts(datetime(2011, 1, 1))}
    assert len((await charts.candles("AAPL", interval="1w", **recent)).candles) == 52
    old = {"from": ts(datetime(2001, 1, 1, tzinfo=UTC)), "to": ts(datetime(2002, 1, 1))}
    refused = await failure(charts.candles("AAPL", interval="1w", **old))
    assert refused.grpc_code == grpc.StatusCode.UNAVAILABLE


async def test_a_year_archived_during_a_read_is_not_missed(
    start_charts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archiver commits just before a request reads `bars` (after any look at the
    archive's records it might have taken first): the answer is still whole."""
    charts = await start(start_charts)
    before = plain(await charts.all_candles("AAPL", interval="1M", limit=10_000))
    read = repository.candles

    async def archive_then_read(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(repository, "candles", read)  # once
        assert await charts.app.archiver.run_once() > 0
        return await read(*args, **kwargs)

    monkeypatch.setattr(repository, "candles", archive_then_read)
    assert plain(await charts.all_candles("AAPL", interval="1M", limit=10_000)) == before
    assert await stored_before_cut(charts.app.settings.database_url) == 0


def hourly_csv() -> str:
    """An hourly instrument over 2000-2012: a few sessions a year (its daily rollup applies)."""
    rows = ["time,open,high,low,close,volume"]
    for year in range(2000, 2013):
        for month, day in ((1, 10), (1, 11), (1, 12), (7, 10), (7, 11), (7, 12)):
            for hour in range(14, 21):
                base = 100 + year - 2000 + day + hour / 10
                stamp = f"{year}-{month:02}-{day:02}T{hour:02}:00:00+00:00"
                rows.append(f"{stamp},{base},{base + 1},{base - 1},{base + 0.5},{hour * 10}")
    return "\n".join(rows) + "\n"


async def test_an_hourly_instrument_and_its_rollups(charts: Any, pg_dsn: str) -> None:
    """Candles from the bars (1h, 4h) read the archive; the daily rollup (1d, 1w, 1M) stays in
    the database. A bar imported into an archived year: its day's rollup is whole again after
    the next run."""
    await charts.import_bars("HOURLY", hourly_csv(), resolution="1h", timezone="America/New_York")

    async def answers() -> dict[str, Any]:
        return {
            i: plain(await charts.all_candles("HOURLY", interval=i, limit=10_000))
            for i in ("1h", "4h", "1d", "1w", "1M")
        }

    before = await answers()
    assert await charts.app.archiver.run_once() == 2 * 6 * 7  # 2000 and 2001
    assert await answers() == before

    day = {"from": ts(datetime(2001, 7, 11, 4, tzinfo=UTC)), "to": ts(datetime(2001, 7, 12, 4))}
    await charts.import_bars(
        "HOURLY", "time,open,high,low,close,volume\n2001-07-11T15:00:00+00:00,50,500,5,60,1\n"
    )
    # Asked (and cached) before the run: the day's rollup then holds the imported bar alone.
    await charts.candles("HOURLY", interval="1d", **day)
    assert await charts.app.archiver.run_once() == 1
    hours = plain((await charts.candles("HOURLY", interval="1h", **day)).candles)
    assert len(hours) == 7
    assert hours[1][1:] == (50, 500, 5, 60, 1)
    (daily,) = plain((await charts.candles("HOURLY", interval="1d", **day)).candles)
    whole = (
        hours[0][1],
        max(h[2] for h in hours),
        min(h[3] for h in hours),
        hours[-1][4],
        sum(h[5] for h in hours),
    )
    assert daily[1:] == whole
