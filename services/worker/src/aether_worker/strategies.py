"""The strategies a `backtest` job may run: `backtesting` Strategy classes over TA-Lib indicators
(the library charts computes its indicators with, so a backtest's RSI is the RSI a chart shows),
and what each one's parameters may be.

- `sma_cross` (fast 10 < slow 30): buys when SMA(fast) crosses above SMA(slow), sells when it
  crosses below;
- `rsi_reversion` (period 14, lower 30 < upper 70): buys when RSI(period) < lower, sells when
  RSI > upper;
- `macd` (fast 12 < slow 26, signal 9): buys when the MACD line crosses above its signal line,
  sells when it crosses below;
- `bollinger_breakout` (period 20, stddev 2.0): buys when the close crosses above the upper band
  (SMA(period) + stddev standard deviations), sells when it crosses below the middle band.

Every strategy is long only and all in: "buy" spends the cash on whole units at the next bar's
open (backtesting's default order), "sell" closes the position; none sells short. Signals are
read on closed bars only, so a run is deterministic: the same bars and parameters give the same
trades.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import talib
from backtesting import Strategy
from backtesting.lib import crossover

Values = Mapping[str, float]


def _floats(series: Any) -> np.ndarray:
    """TA-Lib takes float64 arrays only (a volume or price column may come as integers)."""
    return np.asarray(series, dtype=np.float64)


def _sma(close: Any, period: int) -> np.ndarray:
    return talib.SMA(_floats(close), timeperiod=period)


def _rsi(close: Any, period: int) -> np.ndarray:
    return talib.RSI(_floats(close), timeperiod=period)


def _macd(close: Any, fast: int, slow: int, signal: int) -> np.ndarray:
    """Two rows: the MACD line and its signal line."""
    line, signal_line, _histogram = talib.MACD(
        _floats(close), fastperiod=fast, slowperiod=slow, signalperiod=signal
    )
    return np.vstack([line, signal_line])


def _bbands(close: Any, period: int, stddev: float) -> np.ndarray:
    """Three rows: the upper, middle (SMA) and lower bands."""
    upper, middle, lower = talib.BBANDS(
        _floats(close), timeperiod=period, nbdevup=stddev, nbdevdn=stddev
    )
    return np.vstack([upper, middle, lower])


class SmaCross(Strategy):
    fast = 10
    slow = 30

    def init(self) -> None:
        self.sma_fast = self.I(_sma, self.data.Close, self.fast, name=f"SMA({self.fast})")
        self.sma_slow = self.I(_sma, self.data.Close, self.slow, name=f"SMA({self.slow})")

    def next(self) -> None:
        if not self.position and crossover(self.sma_fast, self.sma_slow):
            self.buy()
        elif self.position and crossover(self.sma_slow, self.sma_fast):
            self.position.close()


class RsiReversion(Strategy):
    period = 14
    lower = 30.0
    upper = 70.0

    def init(self) -> None:
        self.rsi = self.I(_rsi, self.data.Close, self.period, name=f"RSI({self.period})")

    def next(self) -> None:
        if not self.position and self.rsi[-1] < self.lower:
            self.buy()
        elif self.position and self.rsi[-1] > self.upper:
            self.position.close()


class MacdCross(Strategy):
    fast = 12
    slow = 26
    signal = 9

    def init(self) -> None:
        self.macd = self.I(
            _macd,
            self.data.Close,
            self.fast,
            self.slow,
            self.signal,
            name=["MACD", "signal"],
        )

    def next(self) -> None:
        line, signal = self.macd[0], self.macd[1]
        if not self.position and crossover(line, signal):
            self.buy()
        elif self.position and crossover(signal, line):
            self.position.close()


class BollingerBreakout(Strategy):
    period = 20
    stddev = 2.0

    def init(self) -> None:
        self.bands = self.I(
            _bbands, self.data.Close, self.period, self.stddev, name=["upper", "middle", "lower"]
        )

    def next(self) -> None:
        close = self.data.Close
        if not self.position and crossover(close, self.bands[0]):
            self.buy()
        elif self.position and crossover(self.bands[1], close):
            self.position.close()


@dataclass(frozen=True, slots=True)
class Param:
    """A strategy parameter: an integer or a number in [low, high]."""

    name: str
    integer: bool
    default: float
    low: float
    high: float

    def problem(self, value: float) -> str | None:
        """Why `value` cannot be this parameter, or None."""
        kind = "an integer" if self.integer else "a number"
        if not math.isfinite(value) or (self.integer and value != int(value)):
            return f"must be {kind} from {self.low:g} to {self.high:g}"
        if not self.low <= value <= self.high:
            return f"must be {kind} from {self.low:g} to {self.high:g}, not {value:g}"
        return None

    def coerce(self, value: float) -> float:
        return int(value) if self.integer else float(value)


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """A strategy as the `backtest` job offers it: its class, parameters, the pairs of them that
    must be strictly ordered (`(smaller, larger)`), and how many bars its indicators need
    before its first signal."""

    name: str
    strategy: type[Strategy]
    params: tuple[Param, ...]
    ordered: tuple[tuple[str, str], ...]
    warmup: Callable[[Values], int]

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def defaults(self) -> dict[str, float]:
        return {p.name: p.coerce(p.default) for p in self.params}

    def order_problem(self, values: Values) -> tuple[str, str] | None:
        """The first ordering the values break, as (the field, why), or None."""
        for smaller, larger in self.ordered:
            if values[larger] <= values[smaller]:
                return larger, f"must be greater than {smaller} ({values[smaller]:g})"
        return None

    def min_bars(self, values: Values) -> int:
        """Bars needed for at least one signal: the warm-up plus two (a cross compares two)."""
        return self.warmup(values) + 2


STRATEGIES: Mapping[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec(
            "sma_cross",
            SmaCross,
            (Param("fast", True, 10, 2, 500), Param("slow", True, 30, 2, 500)),
            (("fast", "slow"),),
            lambda v: int(v["slow"]),
        ),
        StrategySpec(
            "rsi_reversion",
            RsiReversion,
            (
                Param("period", True, 14, 2, 500),
                Param("lower", False, 30, 1, 99),
                Param("upper", False, 70, 1, 99),
            ),
            (("lower", "upper"),),
            lambda v: int(v["period"]) + 1,
        ),
        StrategySpec(
            "macd",
            MacdCross,
            (
                Param("fast", True, 12, 2, 500),
                Param("slow", True, 26, 2, 500),
                Param("signal", True, 9, 2, 500),
            ),
            (("fast", "slow"),),
            lambda v: int(v["slow"]) + int(v["signal"]),
        ),
        StrategySpec(
            "bollinger_breakout",
            BollingerBreakout,
            (Param("period", True, 20, 2, 500), Param("stddev", False, 2.0, 0.5, 5.0)),
            (),
            lambda v: int(v["period"]),
        ),
    )
}
# Every parameter name any strategy has (the params model declares each once).
PARAM_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(name for spec in STRATEGIES.values() for name in spec.param_names)
)
