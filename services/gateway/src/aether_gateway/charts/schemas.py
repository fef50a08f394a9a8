"""Wire models (pydantic) of `/api/charts/*`: answers in snake_case, times in RFC 3339 UTC."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import Field

from aether_gateway.schemas import Response

Interval = Literal["1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M"]
# Tickers as charts stores them (upper case; the request's case does not matter).
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$"
Symbol = Annotated[
    str,
    Path(
        pattern=SYMBOL_PATTERN,
        description="ticker, e.g. AAPL, BRK.B, EURUSD",
    ),
]


class CandleOut(Response):
    time: str  # the interval's start
    open: float
    high: float
    low: float
    close: float
    volume: float


class CandlesOut(Response):
    symbol: str
    interval: Interval
    timezone: str
    candles: list[CandleOut]
    next_cursor: str | None


class InstrumentOut(Response):
    symbol: str
    name: str
    timezone: str
    resolution: str
    source: str
    first_bar: str | None
    last_bar: str | None
    bars: int


class SymbolsOut(Response):
    symbols: list[InstrumentOut]


class IndicatorsOut(Response):
    symbol: str
    interval: Interval
    timezone: str
    times: list[str] = Field(description="the candles' start times, as GET /api/charts/{symbol}")
    indicators: dict[str, dict[str, list[float | None]]] = Field(
        description='per indicator ("macd:12:26:9"), per output ("signal"): one value per time;'
        " null where history is too short"
    )
    next_cursor: str | None


class IndicatorParamOut(Response):
    name: str
    default: float
    min: float
    max: float
    integer: bool


class IndicatorInfoOut(Response):
    name: str
    title: str
    params: list[IndicatorParamOut]
    outputs: list[str]
    placement: Literal["overlay", "panel"]


class CatalogOut(Response):
    indicators: list[IndicatorInfoOut]


class QuoteOut(Response):
    symbol: str
    timezone: str
    time: str = Field(description="the last stored bar's start; price is its close")
    price: float
    previous_close: float | None = Field(description="the close before the last session")
    change: float
    change_percent: float
    session_start: str = Field(description="the last session's start (midnight, exchange time)")
    day_open: float
    day_high: float
    day_low: float
    day_volume: float
