"""One backtest run, as a plain function of plain values (so a process pool can run it): the
bars, a strategy and its parameters, cash and commission in; the statistics the job reports and
the equity curve out.

The statistics are `backtesting`'s own (`Backtest.run()`), renamed and made JSON-safe (NaN, as
in a run without trades, becomes None). Trades still open at the last bar are closed there
(`finalize_trades=True`), so every trade counts in the statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from backtesting import Backtest

from aether_worker.strategies import STRATEGIES

# The job's name for each of backtesting's statistics.
STATS = {
    "return_pct": "Return [%]",
    "buy_hold_return_pct": "Buy & Hold Return [%]",
    "sharpe": "Sharpe Ratio",
    "sortino": "Sortino Ratio",
    "max_drawdown_pct": "Max. Drawdown [%]",
    "trades": "# Trades",
    "win_rate_pct": "Win Rate [%]",
    "exposure_pct": "Exposure Time [%]",
    "equity_final": "Equity Final [$]",
}


@dataclass(frozen=True, slots=True)
class RunRequest:
    strategy: str
    params: dict[str, float]
    cash: float
    commission: float


@dataclass(frozen=True, slots=True)
class RunOutcome:
    params: dict[str, float]
    stats: dict[str, Any]
    # The account's value at each bar (the strategy's equity curve).
    equity: np.ndarray

    def summary(self) -> dict[str, Any]:
        """The run as a sweep's result lists it."""
        return {"params": self.params, "stats": self.stats}


def backtest(bars: pd.DataFrame, request: RunRequest) -> Backtest:
    """The `Backtest` a run makes (the same construction the tests compare against)."""
    return Backtest(
        bars,
        STRATEGIES[request.strategy].strategy,
        cash=request.cash,
        commission=request.commission,
        finalize_trades=True,
    )


def run_backtest(bars: pd.DataFrame, request: RunRequest) -> RunOutcome:
    stats = backtest(bars, request).run(**request.params)
    equity = stats["_equity_curve"]["Equity"].to_numpy(dtype=np.float64)
    return RunOutcome(dict(request.params), statistics(stats, bars), equity)


def statistics(stats: pd.Series, bars: pd.DataFrame) -> dict[str, Any]:
    """The job's statistics from `Backtest.run()`'s answer (NaN: None)."""
    out: dict[str, Any] = {name: _number(stats[key]) for name, key in STATS.items()}
    out["trades"] = int(stats["# Trades"])
    out["start"] = _iso(stats["Start"])
    out["end"] = _iso(stats["End"])
    out["bars"] = len(bars)
    return out


def rank(outcome: RunOutcome, by: str) -> tuple[float, float]:
    """The sort key of a run for `by` ("sharpe" or "return"); the highest is the best. A run
    without a Sharpe ratio (no trades, flat equity) ranks below every run with one."""
    ret = outcome.stats["return_pct"]
    ret = -math.inf if ret is None else ret
    if by == "return":
        return (ret, 0.0)
    sharpe = outcome.stats["sharpe"]
    return (-math.inf if sharpe is None else sharpe, ret)


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _iso(value: Any) -> str:
    return str(pd.Timestamp(value).isoformat())
