"""The response cache (cache.py) on real PostgreSQL and Redis: answers over closed bars are served
again until the symbol's bars are rewritten; answers reaching into a feed's open bar are not
kept; Redis away is a miss, not an error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2
from redis.asyncio import Redis

from aether.charts.v1 import charts_pb2, events_pb2
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port

CSV = "time,open,high,low,close,volume\n" + "".join(
    f"2024-01-{d:02d},{100 + d},{110 + d},{90 + d},{105 + d},{1000 + d}\n" for d in range(2, 12)
)


async def closes(charts: Any, symbol: str, **fields: Any) -> list[float]:
    return [c.close for c in await charts.all_candles(symbol, **fields)]


async def behind_the_cache(charts: Any, sql: str, *args: Any) -> None:
    """Change a bar without the version going up (as no writer of charts ever does): what the
    next answer shows tells whether it came from the cache."""
    async with charts.app.database.connection() as conn:
        await conn.execute(sql, *args)


async def test_an_answer_is_served_again_until_the_bars_are_rewritten(charts: Any) -> None:
    await charts.import_bars("CCH", CSV, timezone="America/New_York")
    first = await closes(charts, "CCH", interval="1d")
    await behind_the_cache(charts, "UPDATE bars SET close = close + 1000 WHERE symbol = 'CCH'")
    assert await closes(charts, "CCH", interval="1d") == first, "not served from the cache"
    assert (await closes(charts, "CCH", interval="1w"))[0] > 1000, "another query: fresh"

    async with Redis.from_url(charts.app.settings.redis_url) as redis:
        keys = await redis.keys(charts.app.settings.cache_prefix + "*")
    assert len(keys) == 2, keys  # L2 holds both answers, for the other replicas
    async with charts.app.database.connection() as conn:
        version = await conn.fetchval("SELECT version FROM instruments WHERE symbol = 'CCH'")

    # An import rewrites bars: the version goes up, and every answer is computed again.
    await charts.import_bars("CCH", "time,open,high,low,close,volume\n2024-01-02,1,2,1,2,3\n")
    again = await closes(charts, "CCH", interval="1d")
    assert again[0] == 2
    assert again[1] > 1000
    async with charts.app.database.connection() as conn:
        assert (
            await conn.fetchval("SELECT version FROM instruments WHERE symbol = 'CCH'")
            == version + 1
        )


async def test_indicators_are_cached_like_candles(charts: Any) -> None:
    await charts.import_bars("CCI", CSV)
    ask = charts_pb2.GetIndicatorsRequest(symbol="CCI", indicators="sma:2", interval="1d")

    async def answer() -> bytes:
        got = await charts.stub.GetIndicators(ask, metadata=charts.auth("reader"))
        return bytes(got.SerializeToString())

    first = await answer()
    await behind_the_cache(charts, "UPDATE bars SET close = 0.5 WHERE symbol = 'CCI'")
    assert await answer() == first, "not served from the cache"


def tick(symbol: str, time: datetime, price: float) -> events_pb2.MarketTick:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(time)
    return events_pb2.MarketTick(tick_id=str(time), symbol=symbol, time=ts, price=price, size=1)


async def test_answers_that_reach_into_a_feeds_open_bar_are_not_kept(charts: Any) -> None:
    t0 = datetime(2026, 12, 7, 14, 30, tzinfo=UTC)

    async def feed(time: datetime, price: float) -> None:
        async with charts.app.database.connection() as conn, conn.transaction():
            await charts.app.feed.store_tick(conn, tick("LIVE", time, price))

    await feed(t0, 10.0)
    await feed(t0 + timedelta(minutes=1), 11.0)  # the first minute closed, the second is open
    assert await closes(charts, "LIVE", interval="1m") == [10.0, 11.0]
    await feed(t0 + timedelta(minutes=1, seconds=30), 12.0)
    assert await closes(charts, "LIVE", interval="1m") == [10.0, 12.0], "the open bar moves"

    # A window of closed bars only is kept; a late tick (amending a closed bar) invalidates it.
    closed = {"interval": "1m", "to": _ts(t0 + timedelta(minutes=1))}
    assert await closes(charts, "LIVE", **closed) == [10.0]
    await behind_the_cache(charts, "UPDATE bars SET close = 99 WHERE time = $1", t0)
    assert await closes(charts, "LIVE", **closed) == [10.0], "closed bars: cached"
    await feed(t0 + timedelta(seconds=50), 13.0)  # late: high 13, close kept (99 here)
    assert await closes(charts, "LIVE", **closed) == [99.0]


def _ts(time: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(time)
    return ts


async def test_redis_away_is_a_miss_not_an_error(
    start_charts: Any, aether_endpoints: Endpoints
) -> None:
    nothing = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    charts = await start_charts(redis_url=nothing, cache_timeout_s=0.05)
    await charts.import_bars("NOR", CSV)
    assert len(await closes(charts, "NOR", interval="1d")) == 10
    assert len(await closes(charts, "NOR", interval="1d")) == 10
