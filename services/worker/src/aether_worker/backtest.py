"""The `backtest` job: a strategy (strategies.py) over a symbol's history from the charts
service, run with `backtesting`, answering its statistics and an equity-curve PNG.

An attempt reads the window's candles (`CandleSource`; charts away is a retryable failure, an
unknown symbol or an empty window a final one), runs each of the parameters' runs in turn on
the compute pool (backtest_pool.py), reporting progress after each (`run 3 of 6`, also the
cancel checkpoint), picks the best run (by Sharpe, or by return: `rank_by`), draws its equity
curve and stores it as the artifact `equity.png`. The result:

    {"symbol", "strategy", "interval", "cash", "commission", "rank_by",
     "params": the best run's strategy parameters, "stats": its statistics,
     "runs": [{"params", "stats"}, ...] every run's (a sweep only)}

with stats `return_pct, buy_hold_return_pct, sharpe, sortino, max_drawdown_pct, trades,
win_rate_pct, exposure_pct, equity_final, start, end, bars` (backtest_runs.py). An attempt
computes everything again from the bars: the same bars and parameters give the same numbers, so
a retried or re-run attempt records the same result.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import pandas as pd

from aether_worker.backtest_params import BacktestParams
from aether_worker.backtest_pool import Compute, InThread
from aether_worker.backtest_runs import RunOutcome, RunRequest, rank, run_backtest
from aether_worker.equity_chart import EquityPicture, draw_equity
from aether_worker.handler import JobContext, JobFailed, JobType

ARTIFACT = "equity.png"
# A sweep is CPU-bound: each attempt holds one pool process at a time, so this many per worker
# process (the pool has as many processes).
CONCURRENCY = 2
# 500 runs (the cap) over 10,000 bars at up to 0.25 s each (backtest_pool.py) take ~2 minutes.
TIMEOUT_S = 1800.0
MAX_ATTEMPTS = 3
# Bars simulated by one job, over all its runs: ~8 minutes at 25 us a bar (backtest_pool.py).
MAX_BAR_RUNS = 20_000_000


class CandleSource(Protocol):
    async def candles(
        self, symbol: str, interval: str, start: datetime | None, end: datetime | None
    ) -> pd.DataFrame:
        """Open, High, Low, Close, Volume indexed by time, oldest first, for the candles starting
        in [start, end); JobFailed when they cannot be had (candles.py)."""
        ...


def backtest_job(
    candles: CandleSource, compute: Compute | None = None, *, max_bar_runs: int = MAX_BAR_RUNS
) -> JobType:
    """The `backtest` job type over `candles` (the charts client), running on `compute` (the
    service's ComputePool; a thread when None); a job simulates at most `max_bar_runs` bars
    over all its runs (its window's bars times its runs)."""
    runner = Backtester(candles, compute or InThread(), max_bar_runs)
    return JobType(
        name="backtest",
        params=BacktestParams,
        run=runner.run,
        user_may_submit=True,
        max_attempts=MAX_ATTEMPTS,
        concurrency=CONCURRENCY,
        timeout_s=TIMEOUT_S,
        runs=lambda params: len(params.runs()),
    )


class Backtester:
    def __init__(self, candles: CandleSource, compute: Compute, max_bar_runs: int) -> None:
        self._candles = candles
        self._compute = compute
        self._max_bar_runs = max_bar_runs

    async def run(self, ctx: JobContext, params: BacktestParams) -> dict[str, Any]:
        runs = params.runs()
        await ctx.progress(0, "reading bars")
        bars = await self._candles.candles(params.symbol, params.interval, params.start, params.end)
        _check_bars(params, bars, runs, self._max_bar_runs)

        best = await self._run(ctx, params, bars, runs[0], 1, len(runs))
        table = [best.summary()]
        for n, values in enumerate(runs[1:], start=2):
            outcome = await self._run(ctx, params, bars, values, n, len(runs))
            table.append(outcome.summary())
            # Ties keep the earlier run: the order of the sweep decides, never chance.
            if rank(outcome, params.rank_by) > rank(best, params.rank_by):
                best = outcome

        picture = EquityPicture(
            title=_title(params, best),
            times=pd.DatetimeIndex(bars.index),
            equity=best.equity,
            closes=bars["Close"].to_numpy(),
            cash=params.cash,
        )
        png = await self._compute.run(draw_equity, picture)
        await ctx.put_artifact(ARTIFACT, png, "image/png")
        result: dict[str, Any] = {
            "symbol": params.symbol,
            "strategy": params.strategy,
            "interval": params.interval,
            "cash": params.cash,
            "commission": params.commission,
            "rank_by": params.rank_by,
            "params": best.params,
            "stats": best.stats,
        }
        if params.sweep:
            result["runs"] = table
        return result

    async def _run(
        self,
        ctx: JobContext,
        params: BacktestParams,
        bars: pd.DataFrame,
        values: dict[str, float],
        n: int,
        total: int,
    ) -> RunOutcome:
        request = RunRequest(params.strategy, values, params.cash, params.commission)
        outcome = await self._compute.run(run_backtest, bars, request)
        await ctx.progress(5 + 90 * n // total, f"run {n} of {total}")
        return outcome


def _check_bars(
    params: BacktestParams, bars: pd.DataFrame, runs: list[dict[str, float]], max_bar_runs: int
) -> None:
    """The bars can answer the runs: some, enough for every run's warm-up, not too many."""
    window = _window(params)
    if bars.empty:
        raise JobFailed(
            "invalid_data",
            f"{params.symbol} has no {params.interval} bars {window}",
            retryable=False,
        )
    needed = max(params.spec.min_bars(values) for values in runs)
    if len(bars) < needed:
        raise JobFailed(
            "invalid_data",
            f"{params.symbol} has {len(bars)} {params.interval} bars {window}; "
            f"{params.strategy} with these parameters needs at least {needed}",
            retryable=False,
        )
    if len(bars) * len(runs) > max_bar_runs:
        raise JobFailed(
            "invalid_params",
            f"{len(runs)} runs over {len(bars)} bars is more than {max_bar_runs} bars to "
            "simulate; narrow the window (from/to), coarsen the interval or shrink the sweep",
            retryable=False,
        )


def _window(params: BacktestParams) -> str:
    start = params.start.isoformat() if params.start else "the first bar"
    end = params.end.isoformat() if params.end else "the last bar"
    return f"from {start} to {end}"


def _title(params: BacktestParams, best: RunOutcome) -> str:
    values = ", ".join(f"{k}={v:g}" for k, v in best.params.items())
    ret = best.stats["return_pct"]
    shown = "n/a" if ret is None else f"{ret:+.1f}%"
    return f"{params.symbol} {params.interval} {params.strategy}({values}): {shown}"
