"""The strategies (no I/O) on backtesting's bundled GOOG daily bars: each trades as its rule says.

Each trade's entry is filled at the open of the bar after its signal, so the signal bar is
`EntryBar - 1` (and `ExitBar - 1` for a sell; the last trade may instead be closed at the last
bar). The rule is checked there against indicators computed here: SMA and Bollinger bands with
pandas (an implementation of their own), RSI and MACD with TA-Lib directly (the same library
the strategies use: what is checked is the rule, not the indicator). And the strategies are long
only: every trade buys."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import talib
from backtesting import Backtest
from backtesting.test import GOOG

from aether_worker.strategies import (
    BollingerBreakout,
    MacdCross,
    RsiReversion,
    SmaCross,
)

CLOSE = GOOG["Close"].astype(np.float64)


def trades(strategy: type, **values: float) -> pd.DataFrame:
    stats = Backtest(GOOG, strategy, cash=10_000, finalize_trades=True).run(**values)
    found: pd.DataFrame = stats["_trades"]
    assert len(found) >= 5  # enough trades for the checks to mean something
    assert (found["Size"] > 0).all()  # long only
    return found


def crossed_above(a: pd.Series, b: pd.Series, bar: int) -> bool:
    """backtesting.lib.crossover at `bar`: below on the bar before, above on this one."""
    return bool(a.iloc[bar - 1] < b.iloc[bar - 1] and a.iloc[bar] > b.iloc[bar])


def check(
    found: pd.DataFrame,
    buy: Callable[[int], bool],
    sell: Callable[[int], bool],
) -> None:
    last = len(GOOG) - 1
    for entry, exit_ in zip(found["EntryBar"], found["ExitBar"], strict=True):
        assert buy(int(entry) - 1), f"no buy signal before bar {entry}"
        assert int(exit_) == last or sell(int(exit_) - 1), f"no sell signal before bar {exit_}"


def test_sma_cross_buys_on_a_cross_up_and_sells_on_a_cross_down() -> None:
    fast, slow = CLOSE.rolling(10).mean(), CLOSE.rolling(30).mean()
    check(
        trades(SmaCross, fast=10, slow=30),
        buy=lambda bar: crossed_above(fast, slow, bar),
        sell=lambda bar: crossed_above(slow, fast, bar),
    )


@pytest.mark.parametrize(("lower", "upper"), [(30, 70), (40, 60)])
def test_rsi_reversion_buys_below_lower_and_sells_above_upper(lower: int, upper: int) -> None:
    rsi = pd.Series(talib.RSI(CLOSE.to_numpy(), timeperiod=14))
    check(
        trades(RsiReversion, period=14, lower=lower, upper=upper),
        buy=lambda bar: bool(rsi.iloc[bar] < lower),
        sell=lambda bar: bool(rsi.iloc[bar] > upper),
    )


def test_macd_buys_when_its_line_crosses_above_the_signal_line() -> None:
    line, signal, _ = talib.MACD(CLOSE.to_numpy(), fastperiod=12, slowperiod=26, signalperiod=9)
    macd, signal_line = pd.Series(line), pd.Series(signal)
    check(
        trades(MacdCross, fast=12, slow=26, signal=9),
        buy=lambda bar: crossed_above(macd, signal_line, bar),
        sell=lambda bar: crossed_above(signal_line, macd, bar),
    )


def test_bollinger_breakout_buys_above_the_upper_band_and_sells_below_the_middle() -> None:
    middle = CLOSE.rolling(20).mean()
    upper = middle + 1.5 * CLOSE.rolling(20).std(ddof=0)  # TA-Lib's is the population's

    check(
        trades(BollingerBreakout, period=20, stddev=1.5),
        buy=lambda bar: crossed_above(CLOSE, upper, bar),
        sell=lambda bar: crossed_above(middle, CLOSE, bar),
    )


def test_a_strategy_with_no_signal_makes_no_trade() -> None:
    # RSI never falls below 1 on these bars: no entry, no trade, no win rate.
    stats = Backtest(GOOG, RsiReversion, cash=10_000, finalize_trades=True).run(lower=1, upper=99)
    assert stats["# Trades"] == 0
    assert np.isnan(stats["Win Rate [%]"])
    assert stats["Return [%]"] == 0
