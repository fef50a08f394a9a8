"""Conversions between charts.proto messages and the service's records."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from aether.charts.v1 import charts_pb2
from aether_charts.bars import Instrument
from aether_charts.indicators import CATALOG as DEFINITIONS
from aether_charts.repository import InstrumentSummary, Session
from aether_charts.service import (
    CandlePage,
    CandleQuery,
    ChartImage,
    ChartRequest,
    IndicatorPage,
)


def _time(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """What `Timestamp.FromDatetime` makes (a naive time is UTC), by integer arithmetic: one per
    candle, and FromDatetime (calendar.timegm and its checks) was a fifth of charts' CPU for a
    page of 10,000 candles (bench/charts.py)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def candle_query(
    request: charts_pb2.GetCandlesRequest
    | charts_pb2.GetIndicatorsRequest
    | charts_pb2.RenderChartRequest,
) -> CandleQuery:
    return CandleQuery(
        symbol=request.symbol,
        interval=request.interval,
        start=_time(getattr(request, "from")) if request.HasField("from") else None,
        end=_time(request.to) if request.HasField("to") else None,
        limit=request.limit,
        cursor=getattr(request, "cursor", ""),
        latest=getattr(request, "latest", False),
    )


def chart_request(request: charts_pb2.RenderChartRequest) -> ChartRequest:
    return ChartRequest(
        query=candle_query(request),
        overlays=request.overlays,
        width=request.width,
        height=request.height,
        style=request.style,
    )


def chart_response(image: ChartImage) -> charts_pb2.RenderChartResponse:
    return charts_pb2.RenderChartResponse(
        url=image.url, expires_at=_timestamp(image.expires_at), cached=image.cached, key=image.key
    )


def candles_response(page: CandlePage) -> charts_pb2.GetCandlesResponse:
    return charts_pb2.GetCandlesResponse(
        symbol=page.instrument.symbol,
        interval=page.interval,
        timezone=page.instrument.timezone,
        candles=[
            charts_pb2.Candle(
                time=_timestamp(c.time),
                open=c.open,
                high=c.high,
                low=c.low,
                close=c.close,
                volume=c.volume,
            )
            for c in page.candles
        ],
        next_cursor=page.next_cursor,
    )


def instrument(summary: InstrumentSummary) -> charts_pb2.Instrument:
    i = summary.instrument
    pb = charts_pb2.Instrument(
        symbol=i.symbol,
        name=i.name,
        timezone=i.timezone,
        resolution=i.resolution,
        source=i.source,
        bars=summary.bars,
    )
    if summary.first_bar is not None:
        pb.first_bar.CopyFrom(_timestamp(summary.first_bar))
    if summary.last_bar is not None:
        pb.last_bar.CopyFrom(_timestamp(summary.last_bar))
    return pb


def indicators_response(page: IndicatorPage) -> charts_pb2.GetIndicatorsResponse:
    candles = page.candles
    return charts_pb2.GetIndicatorsResponse(
        symbol=candles.instrument.symbol,
        interval=candles.interval,
        timezone=candles.instrument.timezone,
        times=[_timestamp(c.time) for c in candles.candles],
        series=[
            charts_pb2.IndicatorSeries(indicator=key, output=output, values=values.tolist())
            for key, output, values in page.series
        ],
        next_cursor=candles.next_cursor,
    )


CATALOG = charts_pb2.ListIndicatorsResponse(
    indicators=[
        charts_pb2.IndicatorInfo(
            name=d.name,
            title=d.title,
            params=[
                charts_pb2.IndicatorParam(
                    name=p.name, default=p.default, min=p.low, max=p.high, integer=p.integer
                )
                for p in d.params
            ],
            outputs=list(d.outputs),
            placement=d.placement,
        )
        for d in DEFINITIONS.values()
    ]
)


def quote(instrument: Instrument, session: Session) -> charts_pb2.GetQuoteResponse:
    previous = session.previous_close
    change = session.last_close - previous if previous is not None else 0.0
    return charts_pb2.GetQuoteResponse(
        symbol=instrument.symbol,
        timezone=instrument.timezone,
        time=_timestamp(session.last_time),
        price=session.last_close,
        previous_close=previous,
        change=change,
        change_percent=100 * change / previous if previous else 0.0,
        session_start=_timestamp(session.start),
        day_open=session.open,
        day_high=session.high,
        day_low=session.low,
        day_volume=session.volume,
    )
