"""candles.py against a real charts service (in-process, PostgreSQL, holding backtesting's GOOG):
the frame equals the bars as backtesting ships them, paging follows the cursor, a window is
[from, to), and charts' refusals become the JobFailed a job attempt needs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from backtesting.test import GOOG

from aether_worker.candles import COLUMNS, ChartsClient, Token
from aether_worker.handler import JobFailed

# Nothing listens here: a charts that is away.
NOWHERE = "127.0.0.1:9"


@asynccontextmanager
async def client(target: str, token: Token, **options: Any) -> AsyncIterator[ChartsClient]:
    charts = ChartsClient(target, timeout_s=10, token=token, **options)
    await charts.start()
    try:
        yield charts
    finally:
        await charts.stop()


def goog_bars() -> pd.DataFrame:
    """backtesting's GOOG as charts serves it: each day at midnight in New York."""
    expected = GOOG.astype(np.float64)
    index = pd.DatetimeIndex(expected.index).as_unit("ns").tz_localize("America/New_York")
    return expected.set_axis(index.rename("time"))


async def test_the_frame_is_the_bars_backtesting_ships(
    charts_service: Any, worker_token: Token
) -> None:
    async with client(charts_service.address, worker_token) as charts:
        bars = await charts.candles("GOOG", "1d", None, None)

    assert list(bars.columns) == list(COLUMNS)
    assert len(bars) == len(GOOG) == 2148
    assert str(bars.index.tz) == "America/New_York"
    pd.testing.assert_frame_equal(bars, goog_bars(), check_freq=False)


async def test_pages_follow_the_cursor(charts_service: Any, worker_token: Token) -> None:
    calls = 0

    async def counting_token() -> str:
        nonlocal calls
        calls += 1
        return await worker_token()

    async with client(charts_service.address, counting_token, page_limit=500) as charts:
        bars = await charts.candles("GOOG", "1d", None, None)

    assert calls == 5  # 2,148 candles in pages of 500
    pd.testing.assert_frame_equal(bars, goog_bars(), check_freq=False)


async def test_a_window_is_from_inclusive_to_exclusive(
    charts_service: Any, worker_token: Token
) -> None:
    start = datetime(2010, 1, 4, 5, tzinfo=UTC)  # 2010-01-04 00:00 in New York
    end = datetime(2010, 2, 1, 5, tzinfo=UTC)
    async with client(charts_service.address, worker_token) as charts:
        bars = await charts.candles("GOOG", "1d", start, end)

    expected = goog_bars().loc["2010-01-04":"2010-01-29"]
    assert bars.index[0] == pd.Timestamp(start)
    assert bars.index[-1] < pd.Timestamp(end)
    pd.testing.assert_frame_equal(bars, expected, check_freq=False)


async def test_weekly_candles_aggregate_the_days(charts_service: Any, worker_token: Token) -> None:
    async with client(charts_service.address, worker_token) as charts:
        weeks = await charts.candles("GOOG", "1w", None, None)

    days = goog_bars()
    first_week = days.loc["2004-08-19":"2004-08-20"]  # Thu and Fri
    assert weeks.iloc[0].to_dict() == {
        "Open": first_week["Open"].iloc[0],
        "High": first_week["High"].max(),
        "Low": first_week["Low"].min(),
        "Close": first_week["Close"].iloc[-1],
        "Volume": first_week["Volume"].sum(),
    }
    assert weeks["Volume"].sum() == days["Volume"].sum()


async def test_an_empty_window_is_an_empty_frame(charts_service: Any, worker_token: Token) -> None:
    async with client(charts_service.address, worker_token) as charts:
        bars = await charts.candles(
            "GOOG", "1d", datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC)
        )

    assert bars.empty
    assert list(bars.columns) == list(COLUMNS)


async def failed(call: Callable[[ChartsClient], Any], target: str, token: Token) -> JobFailed:
    async with client(target, token, max_bars=1_000) as charts:
        with pytest.raises(JobFailed) as caught:
            await call(charts)
    return caught.value


async def test_an_unknown_symbol_fails_for_good(charts_service: Any, worker_token: Token) -> None:
    error = await failed(
        lambda c: c.candles("NOPE", "1d", None, None), charts_service.address, worker_token
    )
    assert (error.code, error.retryable) == ("unknown_symbol", False)
    assert "NOPE" in error.message


async def test_an_interval_finer_than_the_bars_fails_for_good(
    charts_service: Any, worker_token: Token
) -> None:
    error = await failed(
        lambda c: c.candles("GOOG", "1h", None, None), charts_service.address, worker_token
    )
    assert (error.code, error.retryable) == ("invalid_params", False)


async def test_too_many_candles_fail_for_good(charts_service: Any, worker_token: Token) -> None:
    error = await failed(
        lambda c: c.candles("GOOG", "1d", None, None), charts_service.address, worker_token
    )
    assert (error.code, error.retryable) == ("invalid_params", False)
    assert "more than 1000 candles" in error.message


async def test_charts_away_is_retried(worker_token: Token) -> None:
    error = await failed(lambda c: c.candles("GOOG", "1d", None, None), NOWHERE, worker_token)
    assert (error.code, error.retryable) == ("charts_unavailable", True)
