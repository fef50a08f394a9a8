"""Technical indicators over candles, computed with TA-Lib (VWAP with numpy: TA-Lib has none).

A request names indicators as `name[:param[:param...]]`, comma-separated:
`sma:20,ema:50,rsi:14,macd:12:26:9,bbands:20:2,atr:14,stoch,vwap,obv`. `parse` checks each
against `CATALOG` (unknown names, wrong parameter counts or out-of-range values are refused with
a message naming the item), `warmup_bars` says how many bars before the window each needs, and
`compute` returns its output series aligned to the bars given.

Warm-up: a value inside the window must not depend on where the fetched history starts.
- Window indicators (SMA, WMA, Bollinger, stochastic, CCI, MFI, Williams %R) need exactly their
  TA-Lib lookback.
- Exponential ones (EMA, MACD, RSI, ATR, ADX) remember every bar with a weight that decays by
  (1 - alpha) per bar; they get enough extra bars for the weight of anything older to fall below
  1e-8 (`CONVERGED`), so two different starts agree to about that relative precision.
- Cumulative ones have an anchor instead: VWAP restarts at every session (`session` ids: the
  trading day in the exchange's time zone), OBV starts at 0 on the window's first bar.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import talib
from talib._ta_lib import MA_Type

CONVERGED = 1e-8
SMA = MA_Type.SMA
MAX_PERIOD = 1000
Array = np.ndarray


@dataclass(frozen=True, slots=True)
class Bars:
    """Candles as arrays of one length (oldest first); `session`: the trading day of each bar."""

    open: Array
    high: Array
    low: Array
    close: Array
    volume: Array
    session: Array

    def __len__(self) -> int:
        return len(self.close)

    def tail(self, start: int) -> Bars:
        return Bars(
            self.open[start:],
            self.high[start:],
            self.low[start:],
            self.close[start:],
            self.volume[start:],
            self.session[start:],
        )


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    default: float
    low: float
    high: float
    integer: bool = True


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    title: str
    params: tuple[Param, ...]
    outputs: tuple[str, ...]
    # "overlay": drawn on the price; "panel": its own scale below.
    placement: str
    run: Callable[[Bars, Sequence[float]], Sequence[Array]]
    warmup: Callable[[Sequence[float]], int]


@dataclass(frozen=True, slots=True)
class Indicator:
    """One parsed request item: `key` is how the answer names it ("macd:12:26:9")."""

    definition: Definition
    params: tuple[float, ...]

    @property
    def key(self) -> str:
        values = ":".join(_format(v) for v in self.params)
        return f"{self.definition.name}:{values}" if values else self.definition.name


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _ema_bars(period: float) -> int:
    """Bars for an EMA of `period` (alpha 2/(n+1)) to forget its start to CONVERGED."""
    return _decay_bars(1 - 2 / (period + 1))


def _wilder_bars(period: float) -> int:
    """The same for Wilder's smoothing (alpha 1/n: RSI, ATR, ADX)."""
    return _decay_bars(1 - 1 / period)


def _decay_bars(decay: float) -> int:
    return 0 if decay <= 0 else math.ceil(math.log(CONVERGED) / math.log(decay))


def _period(name: str = "timeperiod", default: float = 14, low: float = 2) -> Param:
    return Param(name, default, low, MAX_PERIOD)


def _vwap(bars: Bars, _: Sequence[float]) -> Sequence[Array]:
    """Cumulative typical price x volume over cumulative volume, restarting at each session."""
    typical = (bars.high + bars.low + bars.close) / 3
    count = len(bars)
    new_session = np.r_[True, bars.session[1:] != bars.session[:-1]]
    first = np.maximum.accumulate(np.where(new_session, np.arange(count), 0))
    weighted, volume = np.cumsum(typical * bars.volume), np.cumsum(bars.volume)
    before = first - 1
    weighted -= np.where(before >= 0, weighted[before], 0.0)
    volume -= np.where(before >= 0, volume[before], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(volume > 0, weighted / volume, typical),)


def _obv(bars: Bars, _: Sequence[float]) -> Sequence[Array]:
    values = talib.OBV(bars.close, bars.volume)
    return (values - values[0],)


def _definitions() -> dict[str, Definition]:
    i = int
    defs = [
        Definition(
            "sma",
            "Simple moving average",
            (_period(default=20, low=1),),
            ("sma",),
            "overlay",
            lambda b, p: (talib.SMA(b.close, i(p[0])),),
            lambda p: i(p[0]) - 1,
        ),
        Definition(
            "wma",
            "Weighted moving average",
            (_period(default=20, low=1),),
            ("wma",),
            "overlay",
            lambda b, p: (talib.WMA(b.close, i(p[0])),),
            lambda p: i(p[0]) - 1,
        ),
        Definition(
            "ema",
            "Exponential moving average",
            (_period(default=20, low=1),),
            ("ema",),
            "overlay",
            lambda b, p: (talib.EMA(b.close, i(p[0])),),
            lambda p: i(p[0]) - 1 + _ema_bars(p[0]),
        ),
        Definition(
            "rsi",
            "Relative strength index",
            (_period(),),
            ("rsi",),
            "panel",
            lambda b, p: (talib.RSI(b.close, i(p[0])),),
            lambda p: i(p[0]) + _wilder_bars(p[0]),
        ),
        Definition(
            "macd",
            "MACD",
            (_period("fast", 12), _period("slow", 26), _period("signal", 9, low=1)),
            ("macd", "signal", "histogram"),
            "panel",
            lambda b, p: talib.MACD(b.close, i(p[0]), i(p[1]), i(p[2])),
            # TA-Lib's lookback (slow - 1 + signal - 1), then both EMAs' memory
            lambda p: i(p[1]) + i(p[2]) - 2 + _ema_bars(p[1]) + _ema_bars(p[2]),
        ),
        Definition(
            "bbands",
            "Bollinger bands",
            (_period(default=20), Param("stddev", 2.0, 0.1, 10.0, integer=False)),
            ("upper", "middle", "lower"),
            "overlay",
            lambda b, p: talib.BBANDS(b.close, i(p[0]), p[1], p[1]),
            lambda p: i(p[0]) - 1,
        ),
        Definition(
            "atr",
            "Average true range",
            (_period(low=1),),
            ("atr",),
            "panel",
            lambda b, p: (talib.ATR(b.high, b.low, b.close, i(p[0])),),
            lambda p: i(p[0]) + _wilder_bars(p[0]),
        ),
        Definition(
            "adx",
            "Average directional index",
            (_period(),),
            ("adx",),
            "panel",
            lambda b, p: (talib.ADX(b.high, b.low, b.close, i(p[0])),),
            lambda p: 2 * i(p[0]) - 1 + 2 * _wilder_bars(p[0]),
        ),
        Definition(
            "stoch",
            "Stochastic oscillator",
            (_period("k", 14, low=1), _period("smooth_k", 3, low=1), _period("d", 3, low=1)),
            ("k", "d"),
            "panel",
            lambda b, p: talib.STOCH(b.high, b.low, b.close, i(p[0]), i(p[1]), SMA, i(p[2]), SMA),
            lambda p: i(p[0]) + i(p[1]) + i(p[2]) - 3,
        ),
        Definition(
            "cci",
            "Commodity channel index",
            (_period(default=20),),
            ("cci",),
            "panel",
            lambda b, p: (talib.CCI(b.high, b.low, b.close, i(p[0])),),
            lambda p: i(p[0]) - 1,
        ),
        Definition(
            "mfi",
            "Money flow index",
            (_period(),),
            ("mfi",),
            "panel",
            lambda b, p: (talib.MFI(b.high, b.low, b.close, b.volume, i(p[0])),),
            lambda p: i(p[0]),
        ),
        Definition(
            "willr",
            "Williams %R",
            (_period(),),
            ("willr",),
            "panel",
            lambda b, p: (talib.WILLR(b.high, b.low, b.close, i(p[0])),),
            lambda p: i(p[0]) - 1,
        ),
        Definition(
            "vwap",
            "Volume-weighted average price, anchored to each session",
            (),
            ("vwap",),
            "overlay",
            _vwap,
            lambda p: 0,
        ),
        Definition(
            "obv",
            "On-balance volume, from 0 at the window's first bar",
            (),
            ("obv",),
            "panel",
            _obv,
            lambda p: 0,
        ),
    ]
    return {d.name: d for d in defs}


CATALOG: Mapping[str, Definition] = _definitions()
MAX_INDICATORS = 10


def parse(text: str) -> list[Indicator]:
    """`sma:20,rsi:14,...` into indicators; ValueError names the item that is wrong."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("name at least one indicator, e.g. sma:20,rsi:14")
    if len(items) > MAX_INDICATORS:
        raise ValueError(f"at most {MAX_INDICATORS} indicators per request")
    parsed = [_parse_one(item) for item in items]
    keys = [indicator.key for indicator in parsed]
    if len(set(keys)) != len(keys):
        raise ValueError("an indicator is named twice")
    return parsed


def _parse_one(item: str) -> Indicator:
    name, *raw = item.lower().split(":")
    definition = CATALOG.get(name)
    if definition is None:
        raise ValueError(f"{item}: unknown indicator (known: {', '.join(sorted(CATALOG))})")
    if len(raw) > len(definition.params):
        raise ValueError(f"{item}: {name} takes at most {len(definition.params)} parameters")
    values: list[float] = []
    given: list[str | None] = [*raw, *[None] * (len(definition.params) - len(raw))]
    for param, text in zip(definition.params, given, strict=True):
        if text is None or text == "":
            values.append(param.default)
            continue
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{item}: {param.name} must be a number") from None
        if param.integer and not value.is_integer():
            raise ValueError(f"{item}: {param.name} must be a whole number")
        if not param.low <= value <= param.high:
            raise ValueError(
                f"{item}: {param.name} must be within {_format(param.low)}-{_format(param.high)}"
            )
        values.append(value)
    if name == "macd" and values[0] >= values[1]:
        raise ValueError(f"{item}: the fast period must be shorter than the slow one")
    return Indicator(definition, tuple(values))


def warmup_bars(indicators: Sequence[Indicator]) -> int:
    """Bars before the window that the indicators need (the longest of theirs)."""
    return max((ind.definition.warmup(ind.params) for ind in indicators), default=0)


def compute(indicator: Indicator, bars: Bars, window_start: int) -> dict[str, Array]:
    """The indicator's outputs for bars[window_start:], computed over all of `bars` (the warm-up
    first); NaN where even that history is too short."""
    source = bars.tail(window_start) if indicator.definition.name == "obv" else bars
    outputs = indicator.definition.run(source, indicator.params)
    offset = 0 if source is not bars else window_start
    return {
        name: np.asarray(values, dtype=np.float64)[offset:]
        for name, values in zip(indicator.definition.outputs, outputs, strict=True)
    }
