"""The `backtest` handler on real bundled bars (backtesting's GOOG daily and EURUSD hourly, fed
through the CandleSource interface): each strategy's statistics equal running `backtesting`
directly with the same Strategy class and parameters on the same bars; sweeps report progress
per run, pick the best and stop at a cancel; empty windows fail for good; the equity curve is a
PNG. One test runs on the service's process pool, one end to end through a real charts."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest
from backtesting.test import EURUSD, GOOG

from aether_worker.backtest import ARTIFACT, backtest_job
from aether_worker.backtest_params import BacktestParams
from aether_worker.backtest_pool import ComputePool, InThread
from aether_worker.candles import ChartsClient, Token
from aether_worker.equity_chart import PNG_MAGIC
from aether_worker.handler import JobCancelled, JobFailed
from aether_worker.strategies import (
    BollingerBreakout,
    MacdCross,
    RsiReversion,
    SmaCross,
)

BUNDLED = {"GOOG": GOOG, "EURUSD": EURUSD}


class BundledBars:
    """CandleSource over backtesting's bundled data: the bars whose start is in [start, end)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, datetime | None, datetime | None]] = []

    async def candles(
        self, symbol: str, interval: str, start: datetime | None, end: datetime | None
    ) -> pd.DataFrame:
        self.asked.append((symbol, interval, start, end))
        if symbol not in BUNDLED:
            raise JobFailed("unknown_symbol", f"unknown symbol {symbol!r}", retryable=False)
        bars = BUNDLED[symbol]
        naive = pd.DatetimeIndex(bars.index)
        keep = np.ones(len(bars), dtype=bool)
        if start is not None:
            keep &= naive >= pd.Timestamp(start).tz_convert(None)
        if end is not None:
            keep &= naive < pd.Timestamp(end).tz_convert(None)
        return bars[keep]


class CountingCompute(InThread):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def run(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        self.calls.append(fn.__name__)
        return await super().run(fn, *args)


def params(**fields: Any) -> BacktestParams:
    return BacktestParams.model_validate(fields)


def direct(
    bars: pd.DataFrame, strategy: type, cash: float = 10_000, commission: float = 0.0, **values: Any
) -> pd.Series:
    """backtesting itself, as its documentation runs it (open trades closed at the end)."""
    return Backtest(bars, strategy, cash=cash, commission=commission, finalize_trades=True).run(
        **values
    )


def same(value: Any, expected: Any) -> bool:
    """Equal, NaN meaning None (JSON has no NaN)."""
    expected = float(expected)
    return value is None if math.isnan(expected) else value == expected


def assert_stats_match(
    stats: dict[str, Any], expected: pd.Series, bars: pd.DataFrame, *, times: bool = True
) -> None:
    for name, key in {
        "return_pct": "Return [%]",
        "buy_hold_return_pct": "Buy & Hold Return [%]",
        "sharpe": "Sharpe Ratio",
        "sortino": "Sortino Ratio",
        "max_drawdown_pct": "Max. Drawdown [%]",
        "win_rate_pct": "Win Rate [%]",
        "exposure_pct": "Exposure Time [%]",
        "equity_final": "Equity Final [$]",
    }.items():
        assert same(stats[name], expected[key]), (name, stats[name], expected[key])
    assert stats["trades"] == expected["# Trades"]
    assert stats["bars"] == len(bars)
    if times:
        assert stats["start"] == pd.Timestamp(expected["Start"]).isoformat()
        assert stats["end"] == pd.Timestamp(expected["End"]).isoformat()


CASES = [
    ("GOOG", "sma_cross", SmaCross, {"fast": 10, "slow": 30}),
    ("GOOG", "rsi_reversion", RsiReversion, {"period": 14, "lower": 30.0, "upper": 70.0}),
    ("GOOG", "macd", MacdCross, {"fast": 12, "slow": 26, "signal": 9}),
    ("GOOG", "bollinger_breakout", BollingerBreakout, {"period": 20, "stddev": 2.0}),
    ("EURUSD", "sma_cross", SmaCross, {"fast": 20, "slow": 50}),
    ("EURUSD", "rsi_reversion", RsiReversion, {"period": 10, "lower": 25.0, "upper": 75.0}),
    ("EURUSD", "macd", MacdCross, {"fast": 8, "slow": 21, "signal": 5}),
    ("EURUSD", "bollinger_breakout", BollingerBreakout, {"period": 30, "stddev": 1.5}),
]


@pytest.mark.parametrize(("symbol", "name", "strategy", "values"), CASES)
async def test_statistics_equal_backtesting_run_directly(
    symbol: str, name: str, strategy: type, values: dict[str, Any], job_context: Any
) -> None:
    interval = "1d" if symbol == "GOOG" else "1h"
    job = backtest_job(BundledBars())
    result = await job.run(
        job_context(),
        params(symbol=symbol, strategy=name, interval=interval, **values),
    )

    bars = BUNDLED[symbol]
    expected = direct(bars, strategy, **values)
    assert expected["# Trades"] > 0  # the comparison means something: the strategy traded
    assert result["params"] == values
    assert_stats_match(result["stats"], expected, bars)
    assert "runs" not in result


async def test_cash_commission_and_a_window_are_those_of_the_direct_run(
    job_context: Any,
) -> None:
    source = BundledBars()
    job = backtest_job(source)
    result = await job.run(
        job_context(),
        params(
            symbol="GOOG",
            strategy="sma_cross",
            fast=5,
            slow=20,
            cash=50_000,
            commission=0.002,
            **{"from": "2008-01-01", "to": "2011-01-01"},
        ),
    )

    start, end = datetime(2008, 1, 1, tzinfo=UTC), datetime(2011, 1, 1, tzinfo=UTC)
    assert source.asked == [("GOOG", "1d", start, end)]
    bars = GOOG.loc["2008-01-01":"2010-12-31"]
    expected = direct(bars, SmaCross, cash=50_000, commission=0.002, fast=5, slow=20)
    assert_stats_match(result["stats"], expected, bars)
    assert result["stats"]["start"] == "2008-01-02T00:00:00"
    assert (result["cash"], result["commission"]) == (50_000, 0.002)


async def test_defaults_are_the_strategy_defaults(job_context: Any) -> None:
    result = await backtest_job(BundledBars()).run(
        job_context(), params(symbol="GOOG", strategy="macd")
    )

    assert result["params"] == {"fast": 12, "slow": 26, "signal": 9}
    assert_stats_match(result["stats"], direct(GOOG, MacdCross), GOOG)


async def test_the_same_bars_and_params_give_the_same_numbers_and_picture(
    job_context: Any,
) -> None:
    job = backtest_job(BundledBars())
    request = params(symbol="EURUSD", strategy="rsi_reversion", interval="1h")
    first, second = job_context(), job_context()

    assert await job.run(first, request) == await job.run(second, request)
    assert first.artifacts == second.artifacts


async def test_the_equity_curve_is_a_png(job_context: Any) -> None:
    ctx = job_context()
    await backtest_job(BundledBars()).run(ctx, params(symbol="GOOG", strategy="sma_cross"))

    png, content_type = ctx.artifacts[ARTIFACT]
    assert content_type == "image/png"
    assert png.startswith(PNG_MAGIC)
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
    assert (width, height) == (1200, 700)
    assert 20_000 < len(png) < 1_000_000


async def test_a_sweep_reports_each_run_and_picks_the_best(job_context: Any) -> None:
    ctx = job_context()
    compute = CountingCompute()
    request = params(
        symbol="GOOG", strategy="sma_cross", sweep={"fast": [5, 10, 40], "slow": [20, 30]}
    )
    result = await backtest_job(BundledBars(), compute).run(ctx, request)

    # (40, 20) and (40, 30) are skipped: fast must stay below slow.
    runs = [
        {"fast": 5, "slow": 20},
        {"fast": 5, "slow": 30},
        {"fast": 10, "slow": 20},
        {"fast": 10, "slow": 30},
    ]
    assert [run["params"] for run in result["runs"]] == runs
    assert [message for _, message in ctx.progress_log] == [
        "reading bars",
        "run 1 of 4",
        "run 2 of 4",
        "run 3 of 4",
        "run 4 of 4",
    ]
    percents = [percent for percent, _ in ctx.progress_log]
    assert percents == sorted(percents)
    assert percents[-1] == 95
    for run in result["runs"]:
        assert_stats_match(run["stats"], direct(GOOG, SmaCross, **run["params"]), GOOG)
    sharpes = [run["stats"]["sharpe"] for run in result["runs"]]
    best = result["runs"][sharpes.index(max(sharpes))]
    assert result["params"] == best["params"]
    assert result["stats"] == best["stats"]
    assert compute.calls == ["run_backtest"] * 4 + ["draw_equity"]
    json.dumps(result, allow_nan=False)  # what the job system stores: JSON without NaN


async def test_a_sweep_ranked_by_return(job_context: Any) -> None:
    request = params(
        symbol="GOOG",
        strategy="bollinger_breakout",
        sweep={"period": [10, 20, 40], "stddev": [1.0, 2.5]},
        rank_by="return",
    )
    result = await backtest_job(BundledBars()).run(job_context(), request)

    returns = [run["stats"]["return_pct"] for run in result["runs"]]
    assert len(returns) == 6
    assert result["stats"]["return_pct"] == max(returns)
    assert result["params"] == result["runs"][returns.index(max(returns))]["params"]


async def test_a_cancelled_sweep_stops_at_the_next_run(job_context: Any) -> None:
    ctx = job_context(cancel_at=3)  # reading bars, run 1, then cancelled after run 2
    compute = CountingCompute()
    request = params(symbol="GOOG", strategy="sma_cross", sweep={"fast": [5, 10, 15, 20, 25]})

    with pytest.raises(JobCancelled):
        await backtest_job(BundledBars(), compute).run(ctx, request)

    assert compute.calls == ["run_backtest", "run_backtest"]
    assert [message for _, message in ctx.progress_log] == [
        "reading bars",
        "run 1 of 5",
        "run 2 of 5",
    ]
    assert ctx.artifacts == {}


async def test_an_empty_window_fails_for_good(job_context: Any) -> None:
    request = params(
        symbol="GOOG", strategy="sma_cross", **{"from": "2020-01-01", "to": "2021-01-01"}
    )
    with pytest.raises(JobFailed) as caught:
        await backtest_job(BundledBars()).run(job_context(), request)

    assert (caught.value.code, caught.value.retryable) == ("invalid_data", False)
    assert "GOOG has no 1d bars from 2020-01-01T00:00:00+00:00" in caught.value.message


async def test_too_few_bars_for_the_strategy_fail_for_good(job_context: Any) -> None:
    request = params(
        symbol="GOOG",
        strategy="sma_cross",
        sweep={"slow": [20, 200]},
        **{"from": "2010-01-01", "to": "2010-07-01"},
    )
    with pytest.raises(JobFailed) as caught:
        await backtest_job(BundledBars()).run(job_context(), request)

    assert (caught.value.code, caught.value.retryable) == ("invalid_data", False)
    assert "needs at least 202" in caught.value.message


async def test_too_much_simulation_fails_for_good(job_context: Any) -> None:
    compute = CountingCompute()
    job = backtest_job(BundledBars(), compute, max_bar_runs=3 * len(GOOG))
    request = params(symbol="GOOG", strategy="sma_cross", sweep={"fast": [5, 10, 15, 20]})

    with pytest.raises(JobFailed) as caught:
        await job.run(job_context(), request)

    assert (caught.value.code, caught.value.retryable) == ("invalid_params", False)
    assert "4 runs over 2148 bars" in caught.value.message
    assert compute.calls == []


async def test_an_unknown_symbol_fails_for_good(job_context: Any) -> None:
    with pytest.raises(JobFailed) as caught:
        await backtest_job(BundledBars()).run(job_context(), params(symbol="NOPE", strategy="macd"))
    assert (caught.value.code, caught.value.retryable) == ("unknown_symbol", False)


async def test_the_process_pool_gives_the_numbers_of_a_thread(
    job_context: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    request = params(symbol="GOOG", strategy="rsi_reversion", sweep={"period": [7, 14]})
    pool = ComputePool(workers=1)
    await pool.start()
    try:
        in_pool = job_context()
        pooled = await backtest_job(BundledBars(), pool).run(in_pool, request)
    finally:
        await pool.stop()
    # The workers share this process's stderr: no progress bar of backtesting's on it.
    assert "Backtest.run" not in capfd.readouterr().err

    in_thread = job_context()
    threaded = await backtest_job(BundledBars(), InThread()).run(in_thread, request)
    assert pooled == threaded
    assert in_pool.artifacts == in_thread.artifacts


def test_the_job_type() -> None:
    job = backtest_job(BundledBars())
    request = params(symbol="GOOG", strategy="sma_cross", sweep={"fast": [5, 50], "slow": [30]})

    assert (job.name, job.params, job.user_may_submit) == ("backtest", BacktestParams, True)
    assert job.runs(request) == 1  # (50, 30) is skipped
    # charts away is retried; a sweep holds a pool process at a time, two per worker process.
    assert (job.max_attempts, job.concurrency) == (3, 2)


async def test_end_to_end_through_charts_equals_backtesting_on_the_same_bars(
    charts_service: Any, worker_token: Token, job_context: Any
) -> None:
    """The bars from a real charts service (backtesting's GOOG imported there) give the
    statistics backtesting computes on its own copy of them."""
    charts = ChartsClient(charts_service.address, timeout_s=10, token=worker_token)
    await charts.start()
    try:
        result = await backtest_job(charts).run(
            job_context(), params(symbol="goog", strategy="sma_cross", fast=10, slow=30)
        )
    finally:
        await charts.stop()

    # Charts' bars carry their exchange's zone; backtesting's copy is naive: the same days.
    assert_stats_match(result["stats"], direct(GOOG, SmaCross, fast=10, slow=30), GOOG, times=False)
    assert result["stats"]["start"] == "2004-08-19T00:00:00-04:00"
    assert result["stats"]["end"] == "2013-03-01T00:00:00-05:00"
