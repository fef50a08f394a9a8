"""`/api/charts/*`: each route calls one ChartsService RPC with the caller's token; charts'
errors keep their meaning (404 for an unknown symbol, 400 for an interval finer than the data
or `from` after `to`). The fixed paths are declared before `/{symbol}`, so they win over it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AwareDatetime

from aether.charts.v1 import charts_pb2
from aether_common.errors import ValidationFailed
from aether_gateway.ai.convert import to_timestamp
from aether_gateway.charts import convert
from aether_gateway.charts.client import ChartsClient, ChartsNotConfigured
from aether_gateway.charts.schemas import (
    SYMBOL_PATTERN,
    CandlesOut,
    CatalogOut,
    GenerateIn,
    GenerateOut,
    IndicatorsOut,
    Interval,
    QuoteOut,
    Symbol,
    SymbolsOut,
)
from aether_gateway.deps import Caller, resources_of

router = APIRouter(prefix="/api/charts", tags=["charts"])


async def get_charts(request: Request) -> ChartsClient:
    charts = resources_of(request).charts
    if charts is None:
        raise ChartsNotConfigured()
    return charts


Charts = Annotated[ChartsClient, Depends(get_charts)]


@router.get("/symbols", summary="Instruments by ticker prefix or name (ListSymbols)")
async def symbols(
    caller: Caller,
    charts: Charts,
    q: Annotated[str, Query(max_length=100, description="ticker prefix or part of the name")] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> SymbolsOut:
    request = charts_pb2.ListSymbolsRequest(q=q.strip(), limit=limit)
    answer = await charts.call(charts.stub.ListSymbols, request, token=caller.raw)
    return SymbolsOut.model_validate(convert.symbols(answer))


IntervalQuery = Annotated[
    Interval | None, Query(description="1m 5m 15m 1h 4h 1d 1w 1M (default: as stored)")
]
From = Annotated[
    AwareDatetime | None, Query(alias="from", description="RFC 3339; candles starting at or after")
]
To = Annotated[
    AwareDatetime | None, Query(alias="to", description="RFC 3339; candles starting before")
]
Limit = Annotated[int, Query(ge=1, le=10_000)]
Cursor = Annotated[str, Query(max_length=200, description="`next_cursor` of the last page")]
Latest = Annotated[
    bool, Query(description="the last `limit` candles before `to` instead of the first from `from`")
]


def _window(request: Any, start: datetime | None, end: datetime | None) -> None:
    """Set a GetCandles / GetIndicators request's from and to (from after to: a 400)."""
    if start is not None and end is not None and start > end:
        raise ValidationFailed("from is after to", field_errors={"from": "after to"})
    if start is not None:
        getattr(request, "from").CopyFrom(to_timestamp(start))
    if end is not None:
        request.to.CopyFrom(to_timestamp(end))


@router.get(
    "/indicators/catalog", summary="The indicators, their parameters and outputs (ListIndicators)"
)
async def indicator_catalog(caller: Caller, charts: Charts) -> CatalogOut:
    request = charts_pb2.ListIndicatorsRequest()
    answer = await charts.call(charts.stub.ListIndicators, request, token=caller.raw)
    return CatalogOut.model_validate(convert.catalog(answer))


@router.get(
    "/indicators",
    summary="Technical indicators aligned to a symbol's candles (GetIndicators)",
    response_model=IndicatorsOut,
)
async def indicator_series(
    symbol: Annotated[str, Query(pattern=SYMBOL_PATTERN, description="ticker, e.g. AAPL")],
    indicators: Annotated[
        str,
        Query(
            min_length=1,
            max_length=300,
            description="comma-separated name[:param...], e.g. sma:20,rsi:14,macd:12:26:9",
        ),
    ],
    caller: Caller,
    charts: Charts,
    interval: IntervalQuery = None,
    start: From = None,
    end: To = None,
    limit: Limit = 500,
    cursor: Cursor = "",
    latest: Latest = False,
) -> Response:
    request = charts_pb2.GetIndicatorsRequest(
        symbol=symbol,
        interval=interval or "",
        limit=limit,
        cursor=cursor,
        indicators=indicators,
        latest=latest,
    )
    _window(request, start, end)
    answer = await charts.call(charts.stub.GetIndicators, request, token=caller.raw)
    return _series(convert.indicators(answer))


@router.get("/{symbol}/quote", summary="Last price, change and the last session's range (GetQuote)")
async def quote(symbol: Symbol, caller: Caller, charts: Charts) -> QuoteOut:
    request = charts_pb2.GetQuoteRequest(symbol=symbol)
    answer = await charts.call(charts.stub.GetQuote, request, token=caller.raw)
    return QuoteOut.model_validate(convert.quote(answer))


@router.post(
    "/generate",
    summary="A PNG chart (candles, volume, overlays) in S3 and a presigned URL (RenderChart)",
)
async def generate(body: GenerateIn, caller: Caller, charts: Charts) -> GenerateOut:
    request = charts_pb2.RenderChartRequest(
        symbol=body.symbol,
        interval=body.interval or "",
        limit=body.limit or 0,
        overlays=body.overlay_spec(),
        width=body.width or 0,
        height=body.height or 0,
        style=body.style or "",
    )
    _window(request, body.start, body.end)
    answer = await charts.call(charts.stub.RenderChart, request, token=caller.raw)
    return GenerateOut.model_validate(convert.generated(answer))


@router.get(
    "/{symbol}",
    summary="Candles of a symbol at an interval, with cursor paging",
    response_model=CandlesOut,
)
async def candles(
    symbol: Symbol,
    caller: Caller,
    charts: Charts,
    interval: IntervalQuery = None,
    start: From = None,
    end: To = None,
    limit: Limit = 500,
    cursor: Cursor = "",
    latest: Latest = False,
) -> Response:
    request = charts_pb2.GetCandlesRequest(
        symbol=symbol, interval=interval or "", limit=limit, cursor=cursor, latest=latest
    )
    _window(request, start, end)
    answer = await charts.call(charts.stub.GetCandles, request, token=caller.raw)
    return _series(convert.candles(answer))


def _series(body: dict[str, Any]) -> Response:
    """A page of candles or indicator values, as convert.py builds it: already the shape the
    route's model documents, so it is not validated again (FastAPI would, twice, for every one
    of up to 10,000 items: most of the gateway's CPU on such a page)."""
    return Response(orjson.dumps(body), media_type="application/json")
