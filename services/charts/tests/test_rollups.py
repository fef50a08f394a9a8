"""Rollups: hourly and daily candles kept for instruments stored finer, on real PostgreSQL.
Every candle served from a rollup must equal the same candle aggregated from the stored bars."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2

from aether.charts.v1 import events_pb2
from aether_charts import repository
from aether_charts.bars import REACH, rollup_for

# Minute bars over a DST change in New York (2024-03-10) and a month end, with gaps.
START = datetime(2024, 2, 26, 14, 0, tzinfo=UTC)
END = datetime(2024, 3, 13, 21, 0, tzinfo=UTC)


def minute_csv(seed: int, start: datetime = START, end: datetime = END, step: int = 7) -> str:
    rnd = random.Random(seed)
    lines = ["time,open,high,low,close,volume"]
    price, t = 100.0, start
    while t < end:
        if t.hour in range(13, 22):  # trading hours only: nights and gaps have no bars
            o = price
            c = max(1.0, o + rnd.uniform(-1, 1))
            h, lo = max(o, c) + rnd.uniform(0, 0.5), min(o, c) - rnd.uniform(0, 0.5)
            lines.append(f"{t.isoformat()},{o:.4f},{h:.4f},{lo:.4f},{c:.4f},{rnd.randint(1, 900)}")
            price = c
        t += timedelta(minutes=step)
    return "\n".join(lines) + "\n"


def key(c: Any) -> tuple[Any, ...]:
    return (c.time, c.open, c.high, c.low, round(c.close, 9), c.volume)


async def from_bars(charts: Any, symbol: str, interval: str) -> list[Any]:
    async with charts.app.database.connection() as conn:
        return await repository.candles(
            conn,
            symbol,
            interval,
            "America/New_York",
            start=START - timedelta(days=40),
            end=END + timedelta(days=40),
            reach=REACH[interval],
            limit=100_000,
            rollup=None,
        )


async def served(charts: Any, symbol: str, interval: str) -> list[tuple[Any, ...]]:
    out = await charts.all_candles(symbol, interval=interval)
    return [
        (c.time.ToDatetime(tzinfo=UTC), c.open, c.high, c.low, round(c.close, 9), c.volume)
        for c in out
    ]


async def assert_rollups_agree(charts: Any, symbol: str) -> None:
    for interval in ("1h", "4h", "1d", "1w", "1M"):
        assert rollup_for(interval, "1m") is not None
        expected = [key(c) for c in await from_bars(charts, symbol, interval)]
        got = await served(charts, symbol, interval)
        assert got == expected, interval
        assert expected, interval


async def test_coarse_candles_of_minute_bars_come_from_rollups_equal_to_the_bars(
    charts: Any,
) -> None:
    await charts.import_bars("MIN.A", minute_csv(1), resolution="1m", timezone="America/New_York")
    await assert_rollups_agree(charts, "MIN.A")
    async with charts.app.database.connection() as conn:
        rows = await conn.fetch(
            "SELECT interval, count(*) AS n FROM bar_rollups WHERE symbol = $1 GROUP BY 1"
            " ORDER BY 1",
            "MIN.A",
        )
        days = await conn.fetchval(
            "SELECT count(DISTINCT date_trunc('day', time, 'America/New_York')) FROM bars"
            " WHERE symbol = $1",
            "MIN.A",
        )
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN " + repository.CANDLES_TRUNC["1d"],
                "MIN.A",
                START,
                END,
                END,
                10,
                "week",
                "America/New_York",
            )
        )
    assert dict((r["interval"], r["n"]) for r in rows)["1d"] == days
    assert "bar_rollups" in plan, plan
    assert "bars_" not in plan.replace("bar_rollups", ""), plan


async def test_a_reimport_and_real_ticks_keep_the_rollups_equal_to_the_bars(
    charts: Any,
) -> None:
    await charts.import_bars("MIN.B", minute_csv(2), resolution="1m", timezone="America/New_York")
    # Part of it again, with other prices: the buckets it touches are aggregated again.
    part = minute_csv(3, START + timedelta(days=3), START + timedelta(days=5), step=7)
    await charts.import_bars("MIN.B", part, resolution="1m", timezone="America/New_York")
    await assert_rollups_agree(charts, "MIN.B")

    # Real ticks through the feed's own writer (feed.py's add_tick path), then compare again.
    feed = charts.app.feed
    async with charts.app.database.connection() as conn, conn.transaction():
        for n, price in enumerate([150.0, 90.0, 120.0, 121.0]):
            ts = timestamp_pb2.Timestamp()
            ts.FromDatetime(END + timedelta(minutes=3 * n))
            tick = events_pb2.MarketTick(
                tick_id=f"t{n}", symbol="MIN.B", time=ts, price=price, size=10
            )
            await feed.store_tick(conn, tick)
    await assert_rollups_agree(charts, "MIN.B")
