"""Answers of GetCandles and GetIndicators kept for the next caller who asks the same: in this
process (L1, an LRU) and in Redis (L2, shared by the replicas, `CHARTS_CACHE_TTL_S`).

Closed bars never change, so an answer over them can be served again until the symbol's bars
are rewritten. The key is the RPC, the symbol, its `instruments.version` and the request's
bytes; the version goes up in the transaction of every write that can change a closed bar or
the first open one (an import, a bundled load, a late tick, a feed's first tick of a symbol), so
a new version makes every older key unreachable (they age out). An answer that reaches into the
bar a real feed is building (`feed_open_bars`) is not kept: it changes with every tick.

Best effort: Redis away or slow (`CHARTS_CACHE_TIMEOUT_S`) is a miss, never an error.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from google.protobuf.message import DecodeError, Message
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aether_charts.bars import bar_end
from aether_charts.metrics import CACHE
from aether_charts.service import CandlePage
from aether_common.logging import get_logger

log = get_logger(__name__)

M = TypeVar("M", bound=Message)


def settled(page: CandlePage, open_bar: datetime | None) -> bool:
    """Whether every candle of the page ends before the bar a feed is building (if any)."""
    if open_bar is None:
        return True
    if not page.candles:
        return False  # the window may be where the feed's bars are about to land
    last = page.candles[-1].time
    return bar_end(page.interval, last, ZoneInfo(page.instrument.timezone)) <= open_bar


class ResponseCache:
    """Component: the L1 dictionary and the L2 Redis client (not part of readiness)."""

    name = "response-cache"

    def __init__(
        self, url: str, *, prefix: str, ttl_s: int, l1_entries: int, timeout_s: float
    ) -> None:
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._l1: OrderedDict[str, bytes] = OrderedDict()
        self._l1_entries = l1_entries
        self._redis: Redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._redis.aclose()

    async def ready(self) -> bool:
        return True

    def key(self, rpc: str, symbol: str, version: int, request: Message) -> str:
        digest = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
        return f"{self.prefix}{rpc}:{symbol}:{version}:{digest[:32]}"

    async def get(self, key: str, rpc: str, message_type: type[M]) -> M | None:
        data = self._l1.get(key)
        level = "l1"
        if data is not None:
            self._l1.move_to_end(key)
        else:
            level = "l2"
            try:
                raw = await self._redis.get(key)
            except (RedisError, OSError) as exc:
                log.warning("response cache unavailable", error=repr(exc))
                raw = None
            data = raw if isinstance(raw, bytes) else None
            if data is not None:
                self._remember(key, data)
        if data is None:
            CACHE.labels(rpc, "miss").inc()
            return None
        try:
            message = message_type.FromString(data)
        except DecodeError:  # another version's shape: forget it
            self._l1.pop(key, None)
            CACHE.labels(rpc, "miss").inc()
            return None
        CACHE.labels(rpc, level).inc()
        return message

    async def put(self, key: str, message: Message) -> None:
        data = message.SerializeToString()
        self._remember(key, data)
        try:
            await self._redis.set(key, data, ex=self.ttl_s)
        except (RedisError, OSError) as exc:
            log.warning("response cache unavailable", error=repr(exc))

    def _remember(self, key: str, data: bytes) -> None:
        self._l1[key] = data
        self._l1.move_to_end(key)
        while len(self._l1) > self._l1_entries:
            self._l1.popitem(last=False)
