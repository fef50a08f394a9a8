"""Wire models (pydantic) of `/api/charts/*`: answers in snake_case, times in RFC 3339 UTC."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import Field, model_validator

from aether_gateway.ai.schemas import Rfc3339
from aether_gateway.schemas import Request, Response

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


# Outer bounds of a chart's size: charts refuses sizes outside its configured bounds (default
# 200-3,000 px) with its own 400; these only stop absurd values before any call.
MIN_SIDE, MAX_SIDE = 50, 8_000


class GenerateIn(Request):
    """POST /api/charts/generate."""

    symbol: Annotated[str, Field(pattern=SYMBOL_PATTERN, description="ticker, e.g. AAPL")]
    interval: Interval | None = None
    start: Rfc3339 | None = Field(default=None, alias="from")
    end: Rfc3339 | None = Field(default=None, alias="to")
    limit: Annotated[int, Field(ge=1, le=10_000, description="candles drawn")] | None = None
    overlays: (
        Annotated[str, Field(max_length=300)]
        | Annotated[list[Annotated[str, Field(min_length=1, max_length=50)]], Field(max_length=5)]
    ) = Field(
        default="",
        description='indicators, "sma:20,rsi:14" or ["sma:20", "rsi:14"]: overlay ones on the'
        " price, panel ones (at most 3) each in a panel below",
    )
    width: Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)] | None = None
    height: Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)] | None = None
    style: Annotated[str, Field(pattern=r"^[a-z_]{1,30}$")] | None = None

    @model_validator(mode="after")
    def _window(self) -> GenerateIn:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError("from is after to")
        return self

    def overlay_spec(self) -> str:
        return ",".join(self.overlays) if isinstance(self.overlays, list) else self.overlays


class GenerateOut(Response):
    url: str = Field(description="presigned GET URL of the PNG")
    expires_at: str = Field(description="when the URL stops working (RFC 3339 UTC)")
    cached: bool = Field(description="the image was already stored (same request, same data)")
