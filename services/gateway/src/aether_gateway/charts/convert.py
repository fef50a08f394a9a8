"""charts.proto messages to the gateway's wire models."""

from __future__ import annotations

from typing import Any

from aether.charts.v1 import charts_pb2
from aether_gateway.ai.convert import timestamp


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
