"""A compact technical summary of an OHLCV series, put in the stock_analysis prompt.

Figures: last close and change over the series, range, SMA 20 / 50 and RSI 14 (Wilder's
smoothing), both from TA-Lib, the library charts computes them with; with numpy, volatility
(standard deviation of bar-to-bar returns, and annualised from the median bar spacing), maximum
drawdown of closes, and the volume trend (mean volume of the last bars against the bars before
them). An indicator needing more bars than given is None ("n/a"). For a symbol analysed from
the charts service's candles (market.py), SMA 20/50 and RSI 14 are charts' own values, the
numbers its charts show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import talib

SECONDS_PER_YEAR = 365.25 * 24 * 3600
RSI_PERIOD = 14
VOLUME_WINDOW = 10

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Bars:
    """Validated bars as columns (validation.py builds it from the request)."""

    times: Array  # epoch seconds, strictly increasing
    open: Array
    high: Array
    low: Array
    close: Array
    volume: Array


@dataclass(frozen=True, slots=True)
class Summary:
    symbol: str
    bars: int
    first_time: float
    last_time: float
    last_close: float
    change_pct: float
    low: float
    high: float
    sma20: float | None
    sma50: float | None
    rsi14: float | None
    volatility_pct: float | None
    volatility_annual_pct: float | None
    max_drawdown_pct: float
    volume_trend_pct: float | None

    def as_text(self) -> str:
        """A few short lines (the prompt budget is small)."""
        start = _day(self.first_time)
        end = _day(self.last_time)

        def side(sma: float | None) -> str:
            if sma is None:
                return "n/a"
            where = "above" if self.last_close > sma else "below"
            return f"{sma:.2f} (price {where})"

        vol = "n/a"
        if self.volatility_pct is not None:
            vol = f"{self.volatility_pct:.2f}% per bar"
            if self.volatility_annual_pct is not None:
                vol += f" ({self.volatility_annual_pct:.1f}% annualised)"
        volume = "n/a"
        if self.volume_trend_pct is not None:
            volume = f"{self.volume_trend_pct:+.1f}% (recent bars vs the ones before)"
        return "\n".join(
            [
                f"{self.symbol}: {self.bars} bars, {start} to {end}",
                f"last close {self.last_close:.2f}, change {self.change_pct:+.2f}%, "
                f"range {self.low:.2f}-{self.high:.2f}",
                f"SMA20 {side(self.sma20)}, SMA50 {side(self.sma50)}",
                "RSI14 " + ("n/a" if self.rsi14 is None else f"{self.rsi14:.1f}"),
                f"volatility {vol}",
                f"max drawdown {self.max_drawdown_pct:.2f}%",
                f"volume trend {volume}",
            ]
        )


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def sma(close: Array, period: int) -> float | None:
    """TA-Lib's SMA of the last bar, as the charts service computes it."""
    if len(close) < period:
        return None
    return float(talib.SMA(close, timeperiod=period)[-1])


def rsi(close: Array, period: int = RSI_PERIOD) -> float | None:
    """TA-Lib's RSI (Wilder's smoothing) of the last bar, as the charts service computes it:
    100 when there were only gains, 0 when the closes never moved."""
    if len(close) <= period:
        return None
    return float(talib.RSI(close, timeperiod=period)[-1])


def volatility(close: Array, times: Array) -> tuple[float | None, float | None]:
    """(stdev of bar returns in %, annualised in %) or None when fewer than 3 closes."""
    if len(close) < 3:
        return None, None
    returns = np.diff(close) / close[:-1]
    per_bar = float(returns.std(ddof=1))
    spacing = float(np.median(np.diff(times)))
    annual = per_bar * math.sqrt(SECONDS_PER_YEAR / spacing) if spacing > 0 else None
    return per_bar * 100, (annual * 100 if annual is not None else None)


def max_drawdown(close: Array) -> float:
    """Largest fall from a running peak of closes, in % (0 when it never fell)."""
    peaks = np.maximum.accumulate(close)
    drawdowns = close / peaks - 1.0
    return float(-drawdowns.min() * 100)


def volume_trend(volume: Array, window: int = VOLUME_WINDOW) -> float | None:
    """Mean volume of the last `window` bars vs the `window` before (shorter series: halves)."""
    size = min(window, len(volume) // 2)
    if size < 1:
        return None
    recent = float(volume[-size:].mean())
    before = float(volume[-2 * size : -size].mean())
    if before == 0:
        return None
    return (recent / before - 1.0) * 100


def summarise(symbol: str, bars: Bars) -> Summary:
    close = bars.close
    vol_bar, vol_annual = volatility(close, bars.times)
    return Summary(
        symbol=symbol,
        bars=len(close),
        first_time=float(bars.times[0]),
        last_time=float(bars.times[-1]),
        last_close=float(close[-1]),
        change_pct=float((close[-1] / close[0] - 1.0) * 100),
        low=float(bars.low.min()),
        high=float(bars.high.max()),
        sma20=sma(close, 20),
        sma50=sma(close, 50),
        rsi14=rsi(close),
        volatility_pct=vol_bar,
        volatility_annual_pct=vol_annual,
        max_drawdown_pct=max_drawdown(close),
        volume_trend_pct=volume_trend(bars.volume),
    )


def columns(rows: Sequence[tuple[float, float, float, float, float, float]]) -> Bars:
    """(time, open, high, low, close, volume) rows as columns."""
    data = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return Bars(data[:, 0], data[:, 1], data[:, 2], data[:, 3], data[:, 4], data[:, 5])
