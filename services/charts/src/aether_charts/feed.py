"""The feed consumer: `aether.market.tick.v1` and `aether.market.bar_closed.v1` in, stored bars
and live frames out.

- A real tick (no `replay`) updates the stored bar that holds it, at the instrument's resolution
  (open stays, high/low widen, close becomes the price, volume adds the size), and the same in
  its rollups (repository.py); every coarser candle follows, since candles are aggregated from
  the stored bars and rollups. A symbol charts does not
  know yet becomes an instrument (`source` "feed", UTC, `CHARTS_FEED_RESOLUTION`). The bar the
  feed builds per symbol is `feed_open_bars`: a tick of a later bar closes it, and the
  `bar_closed` events of every interval it completes go to the outbox in the same transaction.
  A tick of an earlier bar (late) amends that bar's high, low and volume, not its close, and
  closes nothing again.
- A replayed tick is not stored: it is the stored history played back (replay.py).
- Every tick and closed bar is published as a live frame (stream.py).

Exactly once per event id (the kit's consumer: `processed_events` in the same transaction as
the bar's update). One symbol's ticks arrive in order (the key is the symbol): "close" is the
last price received.
"""

from __future__ import annotations

import math
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

from aether.charts.v1 import events_pb2
from aether_charts import bars as b
from aether_charts import market_events, repository
from aether_charts.bars import Instrument, bucket_start, rollups_of
from aether_charts.closes import closed_candles
from aether_charts.metrics import FEED_TICKS
from aether_charts.stream import StreamPublisher, bar_frame, tick_frame
from aether_common.events import (
    BackgroundConsumer,
    ConsumerOptions,
    Event,
    EventConsumer,
    HandleContext,
    PgIdempotencyStore,
    outbox_pg,
)
from aether_common.postgres import PostgresDatabase

FEED_SOURCE = "feed"
# A tick that cannot be a price is retried briefly, then parked on the topic's DLQ.
DEFAULT_OPTIONS = ConsumerOptions(max_attempts=3, backoff_s=0.1, dedup_retention_s=2 * 24 * 3600.0)


class InvalidTick(ValueError):
    """A tick that cannot be stored (a bad symbol, price, size or time)."""


def check_tick(tick: events_pb2.MarketTick) -> None:
    if not b.SYMBOL.fullmatch(tick.symbol):
        raise InvalidTick(f"symbol {tick.symbol!r} is not a ticker (A-Z 0-9 . -)")
    if not math.isfinite(tick.price) or tick.price <= 0:
        raise InvalidTick(f"price {tick.price} is not a positive number")
    if not math.isfinite(tick.size) or tick.size < 0:
        raise InvalidTick(f"size {tick.size} is negative or not a number")
    if not tick.HasField("time"):
        raise InvalidTick("the tick has no time")
    year = tick.time.ToDatetime(tzinfo=UTC).year
    if not b.FIRST_YEAR <= year <= b.LAST_YEAR:
        raise InvalidTick(f"time year {year} is outside {b.FIRST_YEAR}-{b.LAST_YEAR}")


class FeedConsumer(BackgroundConsumer):
    """Component: the consumer group member for the market topics."""

    def __init__(
        self,
        database: PostgresDatabase,
        stream: StreamPublisher,
        *,
        bootstrap: str,
        group_id: str,
        topic_prefix: str = "",
        resolution: str = "1m",
        options: ConsumerOptions | None = None,
    ) -> None:
        super().__init__(
            bootstrap,
            [topic_prefix + topic for topic in market_events.TOPICS],
            group_id=group_id,
            options=options or DEFAULT_OPTIONS,
        )
        self._database = database
        self._stream = stream
        self._prefix = topic_prefix
        self._resolution = resolution
        # Years whose partition of `bars` is known to exist.
        self._years: set[int] = set()

    def build(self) -> EventConsumer[Any]:
        consumer = self.new_consumer(PgIdempotencyStore(self._database.pool))
        ticks, closed = self.topics
        consumer.add_handler(ticks, events_pb2.MarketTick, self.tick)
        consumer.add_handler(closed, events_pb2.BarClosed, self.bar_closed)
        return consumer

    async def tick(self, event: Event[events_pb2.MarketTick], ctx: HandleContext[Any]) -> None:
        tick = event.payload
        if tick.HasField("replay"):
            FEED_TICKS.labels("replayed").inc()
        else:
            check_tick(tick)
            FEED_TICKS.labels(await self.store_tick(ctx.tx, tick)).inc()
        await self._stream.publish("tick", tick.symbol, tick_frame(tick))

    async def bar_closed(self, event: Event[events_pb2.BarClosed], ctx: HandleContext[Any]) -> None:
        closed = event.payload
        await self._stream.publish("bar", closed.symbol, bar_frame(closed))

    async def store_tick(self, conn: Any, tick: events_pb2.MarketTick) -> str:
        """Update the tick's bar (in the caller's transaction on `conn`); close the open bar
        when this tick starts a later one. The outcome for the metric."""
        instrument = await self._instrument(conn, tick.symbol)
        time = tick.time.ToDatetime(tzinfo=UTC)
        zone = ZoneInfo(instrument.timezone)
        start = bucket_start(instrument.resolution, time, zone)
        rollups = [(r, bucket_start(r, time, zone)) for r in rollups_of(instrument.resolution)]
        if start.year not in self._years:  # the catalog is read once a year, not per tick
            created = await repository.ensure_partitions(conn, {start.year})
            if not created:  # it existed before this transaction: no rollback can undo it
                self._years.add(start.year)
        open_bar = await conn.fetchval(
            "SELECT time FROM feed_open_bars WHERE symbol = $1 FOR UPDATE", tick.symbol
        )
        late = open_bar is not None and start < open_bar
        await repository.add_tick(
            conn, tick.symbol, start, tick.price, tick.size, sets_close=not late, rollups=rollups
        )
        if late or open_bar is None:  # a closed bar changed, or the first open one appeared
            await repository.bump_versions(conn, [tick.symbol])
        if late:
            return "late"
        if open_bar is None or start > open_bar:
            await conn.execute(
                "INSERT INTO feed_open_bars (symbol, time) VALUES ($1, $2)"
                " ON CONFLICT (symbol) DO UPDATE SET time = excluded.time",
                tick.symbol,
                start,
            )
        if open_bar is not None and start > open_bar:
            closes = await closed_candles(conn, instrument, open_bar, start)
            await outbox_pg.add_many(
                conn,
                [
                    market_events.bar_closed(
                        tick.symbol, interval, candle, topic_prefix=self._prefix
                    )
                    for interval, candle in closes
                ],
            )
        return "stored"

    async def _instrument(self, conn: Any, symbol: str) -> Instrument:
        found = await repository.instrument(conn, symbol)
        if found is not None:
            return found
        new = Instrument(symbol, symbol, "UTC", self._resolution, FEED_SOURCE)
        await repository.add_instruments(conn, [new])
        return await repository.instrument(conn, symbol) or new
