"""charts.proto messages to the gateway's wire models."""

from __future__ import annotations

import math
from typing import Any

from aether.charts.v1 import charts_pb2
from aether_gateway.ai.convert import rfc3339, timestamp


def candles(answer: charts_pb2.GetCandlesResponse) -> dict[str, Any]:
    return {
        "symbol": answer.symbol,
        "interval": answer.interval,
        "timezone": answer.timezone,
        "candles": [
            {
                "time": timestamp(c, "time"),
                "open": c.open,
                "high": c.high,
                "low": c.low,
                "close": c.close,
                "volume": c.volume,
            }
            for c in answer.candles
        ],
        "next_cursor": answer.next_cursor or None,
    }


def symbols(answer: charts_pb2.ListSymbolsResponse) -> dict[str, Any]:
    return {
        "symbols": [
            {
                "symbol": i.symbol,
                "name": i.name,
                "timezone": i.timezone,
                "resolution": i.resolution,
                "source": i.source,
                "first_bar": timestamp(i, "first_bar"),
                "last_bar": timestamp(i, "last_bar"),
                "bars": i.bars,
            }
            for i in answer.instruments
        ]
    }


def indicators(answer: charts_pb2.GetIndicatorsResponse) -> dict[str, Any]:
    shaped: dict[str, dict[str, list[float | None]]] = {}
    for series in answer.series:
        values = [None if math.isnan(v) else v for v in series.values]  # JSON has no NaN
        shaped.setdefault(series.indicator, {})[series.output] = values
    return {
        "symbol": answer.symbol,
        "interval": answer.interval,
        "timezone": answer.timezone,
        "times": [rfc3339(t) for t in answer.times],
        "indicators": shaped,
        "next_cursor": answer.next_cursor or None,
    }


def catalog(answer: charts_pb2.ListIndicatorsResponse) -> dict[str, Any]:
    return {
        "indicators": [
            {
                "name": i.name,
                "title": i.title,
                "params": [
                    {
                        "name": p.name,
                        "default": p.default,
                        "min": p.min,
                        "max": p.max,
                        "integer": p.integer,
                    }
                    for p in i.params
                ],
                "outputs": list(i.outputs),
                "placement": i.placement,
            }
            for i in answer.indicators
        ]
    }


def quote(answer: charts_pb2.GetQuoteResponse) -> dict[str, Any]:
    return {
        "symbol": answer.symbol,
        "timezone": answer.timezone,
        "time": rfc3339(answer.time),
        "price": answer.price,
        "previous_close": answer.previous_close if answer.HasField("previous_close") else None,
        "change": answer.change,
        "change_percent": answer.change_percent,
        "session_start": rfc3339(answer.session_start),
        "day_open": answer.day_open,
        "day_high": answer.day_high,
        "day_low": answer.day_low,
        "day_volume": answer.day_volume,
    }


def generated(answer: charts_pb2.RenderChartResponse) -> dict[str, Any]:
    return {
        "url": answer.url,
        "expires_at": timestamp(answer, "expires_at"),
        "cached": answer.cached,
    }
