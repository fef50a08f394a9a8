"""Candles from the bundled history, checked against aggregations computed here, independently,
from the datasets' own files; the window, the cursor and the refusals."""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import timestamp_pb2

from aether_charts.datasets import backtesting_file, bokeh_stocks_file
from aether_devstack.testkit import failure

NY = ZoneInfo("America/New_York")
Row = tuple[datetime, float, float, float, float, float]  # start, open, high, low, close, volume


def bokeh_rows(ticker: str) -> list[tuple[date, float, float, float, float, float]]:
    with gzip.open(bokeh_stocks_file(), "rt", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [
            (date.fromisoformat(d), float(o), float(h), float(lo), float(c), float(v))
            for t, d, o, h, lo, c, v, _adj in reader
            if t == ticker
        ]


def eurusd_rows() -> list[tuple[datetime, float, float, float, float, float]]:
    with backtesting_file("EURUSD").open(newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [
            (datetime.fromisoformat(t).replace(tzinfo=UTC), *map(float, (o, h, lo, c, v)))  # type: ignore[misc]
            for t, o, h, lo, c, v in reader
        ]


def aggregate(
    rows: Iterable[tuple[Any, ...]], key: Callable[[Any], Hashable]
) -> list[tuple[Any, ...]]:
    """(key, open, high, low, close, volume) per key, in time order: plain Python."""
    groups: dict[Hashable, list[tuple[Any, ...]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r[0]):
        groups[key(row[0])].append(row)
    return [
        (k, g[0][1], max(r[2] for r in g), min(r[3] for r in g), g[-1][4], sum(r[5] for r in g))
        for k, g in sorted(groups.items(), key=lambda kv: kv[1][0][0])
    ]


def local_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=NY).astimezone(UTC)


def as_tuples(candles: Iterable[Any]) -> list[tuple[Any, ...]]:
    return [
        (c.time.ToDatetime(tzinfo=UTC), c.open, c.high, c.low, c.close, c.volume) for c in candles
    ]


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def assert_same(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[0] == w[0]
        assert g[1:5] == w[1:5]  # first, max, min, last: exact
        assert g[5] == pytest.approx(w[5], rel=1e-12)


DAILY_KEYS: dict[str, Callable[[date], date]] = {
    "1d": lambda d: d,
    "1w": lambda d: d - timedelta(days=d.weekday()),  # ISO weeks start on Monday
    "1M": lambda d: d.replace(day=1),
}


@pytest.mark.parametrize("interval", ["1d", "1w", "1M"])
async def test_daily_weekly_monthly_equal_the_file(bundled: Any, interval: str) -> None:
    want = [
        (local_midnight(k), *rest)
        for k, *rest in aggregate(bokeh_rows("AAPL"), DAILY_KEYS[interval])
    ]
    got = as_tuples(await bundled.all_candles("AAPL", interval=interval, limit=5000))
    assert_same(got, want)
    # A candle starts at its interval's start (midnight in New York), not at its first bar:
    # the first weekly candle starts on Monday 2000-02-28, the data on Wednesday 2000-03-01.
    first = {
        "1d": datetime(2000, 3, 1, 5),
        "1w": datetime(2000, 2, 28, 5),
        "1M": datetime(2000, 3, 1, 5),
    }
    assert got[0][0] == first[interval].replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("interval", "key"),
    [
        ("1h", lambda t: t),
        ("4h", lambda t: t.replace(hour=t.hour - t.hour % 4)),
        ("1d", lambda t: t.replace(hour=0)),
    ],
)
async def test_hourly_fx_aggregates_in_utc(
    bundled: Any, interval: str, key: Callable[[datetime], datetime]
) -> None:
    want = aggregate(eurusd_rows(), key)
    got = as_tuples(await bundled.all_candles("EURUSD", interval=interval, limit=10_000))
    assert_same(got, want)


async def test_window_and_paging_return_every_candle_once(bundled: Any) -> None:
    start, end = datetime(2008, 1, 1, tzinfo=UTC), datetime(2008, 7, 1, tzinfo=UTC)
    window = {"interval": "1d", "to": ts(end)}
    window["from"] = ts(start)
    whole = await bundled.candles("MSFT", limit=10_000, **window)
    assert whole.next_cursor == ""
    expected = [
        local_midnight(d[0]) for d in bokeh_rows("MSFT") if start <= local_midnight(d[0]) < end
    ]
    assert [c.time.ToDatetime(tzinfo=UTC) for c in whole.candles] == expected

    paged = await bundled.all_candles("MSFT", limit=7, **window)
    assert as_tuples(paged) == as_tuples(whole.candles)
    assert len({c.time.seconds for c in paged}) == len(paged) == len(expected)

    first = await bundled.candles("MSFT", limit=7, **window)
    assert len(first.candles) == 7
    assert first.next_cursor
    bad = await failure(bundled.candles("MSFT", interval="1w", limit=7, cursor=first.next_cursor))
    assert bad.field_errors.keys() == {"cursor"}


async def test_default_interval_is_the_stored_one(bundled: Any) -> None:
    page = await bundled.candles("eurusd", limit=3)
    assert (page.symbol, page.interval, page.timezone) == ("EURUSD", "1h", "UTC")
    assert len(page.candles) == 3
    assert page.next_cursor


@pytest.mark.parametrize(
    ("symbol", "fields", "code", "field"),
    [
        ("AAPL", {"interval": "1h"}, grpc.StatusCode.INVALID_ARGUMENT, "interval"),
        ("EURUSD", {"interval": "15m"}, grpc.StatusCode.INVALID_ARGUMENT, "interval"),
        ("AAPL", {"interval": "2d"}, grpc.StatusCode.INVALID_ARGUMENT, "interval"),
        ("AAPL", {"limit": 100_001}, grpc.StatusCode.INVALID_ARGUMENT, "limit"),
        ("AAPL", {"cursor": "not-a-cursor"}, grpc.StatusCode.INVALID_ARGUMENT, "cursor"),
        ("NOPE", {}, grpc.StatusCode.NOT_FOUND, "symbol"),
        ("bad symbol!", {}, grpc.StatusCode.INVALID_ARGUMENT, "symbol"),
    ],
)
async def test_refusals(
    bundled: Any, symbol: str, fields: dict[str, Any], code: grpc.StatusCode, field: str
) -> None:
    error = await failure(bundled.candles(symbol, **fields))
    assert error.grpc_code == code
    assert field in error.field_errors
    assert error.detail


async def test_from_after_to_is_invalid(bundled: Any) -> None:
    fields = {"to": ts(datetime(2005, 1, 1, tzinfo=UTC))}
    fields["from"] = ts(datetime(2006, 1, 1, tzinfo=UTC))
    error = await failure(bundled.candles("AAPL", **fields))
    assert error.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "from" in error.field_errors


async def test_far_windows_are_answered(bundled: Any) -> None:
    fields = {"to": ts(datetime(9999, 12, 31, tzinfo=UTC))}
    fields["from"] = ts(datetime(1, 1, 1, tzinfo=UTC))
    page = await bundled.candles("AAPL", interval="1M", limit=1000, **fields)
    assert len(page.candles) == 157  # 2000-03 .. 2013-03


async def test_finer_interval_message_names_what_is_allowed(bundled: Any) -> None:
    error = await failure(bundled.candles("AAPL", interval="1m"))
    assert "1d 1w 1M" in error.detail


async def test_a_call_without_a_token_is_refused(bundled: Any) -> None:
    from aether.charts.v1 import charts_pb2

    error = await failure(bundled.stub.GetCandles(charts_pb2.GetCandlesRequest(symbol="AAPL")))
    assert error.grpc_code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("interval", ["1d", "1w", "1M"])
async def test_latest_is_the_last_candles_before_to(bundled: Any, interval: str) -> None:
    every = await bundled.all_candles("AAPL", interval=interval, limit=10_000)
    latest = await bundled.candles("AAPL", interval=interval, limit=5, latest=True)
    assert list(latest.candles) == every[-5:]
    assert latest.next_cursor == ""
    to = ts(datetime(2010, 1, 1, tzinfo=UTC))
    before = await bundled.candles("AAPL", interval=interval, limit=3, latest=True, to=to)
    earlier = [c for c in every if c.time.ToDatetime(tzinfo=UTC) < datetime(2010, 1, 1, tzinfo=UTC)]
    assert list(before.candles) == earlier[-3:]


async def test_latest_takes_no_cursor(bundled: Any) -> None:
    page = await bundled.candles("AAPL", limit=2)
    error = await failure(bundled.candles("AAPL", latest=True, cursor=page.next_cursor))
    assert error.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cursor" in error.field_errors
