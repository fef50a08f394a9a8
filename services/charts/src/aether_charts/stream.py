"""Live frames for the gateway's `WS /api/market/stream` (docs/charts.md, "Live market stream"):
every tick and closed bar is PUBLISHed on Redis channel `<prefix>symbol:<SYMBOL>` as the exact
JSON text a client gets; the gateway forwards it unchanged to the sockets following the symbol.

Frames are ephemeral, like the prices they carry: published once the event is handled (again if
a redelivered event is handled again; clients drop repeats by `id`), and lost while Redis is away
(counted), without holding up the feed. History is read from `GET /api/charts/{symbol}`.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from aether.charts.v1 import events_pb2
from aether_charts.market_events import stamp
from aether_charts.metrics import STREAM_FRAMES
from aether_common.logging import get_logger

log = get_logger(__name__)


def _replay(message: events_pb2.MarketTick | events_pb2.BarClosed) -> dict[str, Any] | None:
    if not message.HasField("replay"):
        return None
    return {"pass": getattr(message.replay, "pass"), "bar_seconds": message.replay.bar_seconds}


def _dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), allow_nan=False)


def tick_frame(tick: events_pb2.MarketTick) -> str:
    return _dumps(
        {
            "type": "tick",
            "symbol": tick.symbol,
            "id": tick.tick_id,
            "time": stamp(tick.time.ToDatetime(tzinfo=UTC)),
            "price": tick.price,
            "size": tick.size,
            "derived": tick.derived,
            "replay": _replay(tick),
        }
    )


def bar_frame(closed: events_pb2.BarClosed) -> str:
    bar = closed.bar
    return _dumps(
        {
            "type": "bar",
            "symbol": closed.symbol,
            "interval": closed.interval,
            "id": closed.bar_id,
            "time": stamp(bar.time.ToDatetime(tzinfo=UTC)),
            "open": bar.open,
            "high": bar.high,
            "low": bar.low,
            "close": bar.close,
            "volume": bar.volume,
            "closed": True,
            "replay": _replay(closed),
        }
    )


class StreamPublisher:
    """Component: the Redis client that frames go out on. Not part of readiness: charts serves
    its reads without Redis."""

    name = "market-stream"

    def __init__(self, url: str, *, prefix: str, timeout_s: float = 1.0) -> None:
        self.prefix = prefix
        self._redis: Redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    def channel(self, symbol: str) -> str:
        return f"{self.prefix}symbol:{symbol}"

    async def start(self) -> None:
        return None  # connections open with the first frame

    async def stop(self) -> None:
        await self._redis.aclose()

    async def ready(self) -> bool:
        return True  # frames are best effort; charts' reads do not need Redis

    async def publish(self, kind: str, symbol: str, frame: str) -> None:
        try:
            await self._redis.publish(self.channel(symbol), frame)
        except (RedisError, OSError) as exc:
            STREAM_FRAMES.labels(kind, "failed").inc()
            log.warning("stream frame lost: Redis unavailable", symbol=symbol, error=repr(exc))
            return
        STREAM_FRAMES.labels(kind, "published").inc()
