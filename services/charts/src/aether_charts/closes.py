"""The candles a bar completes, read back from the stored bars (the same candle query the
charts read): what a `bar_closed` event carries, for the replayer and the real feed alike."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from aether_charts import repository
from aether_charts.bars import REACH, Instrument, closing
from aether_charts.repository import Candle, Conn

_INSTANT = timedelta(microseconds=1)


async def closed_candles(
    conn: Conn, instrument: Instrument, bar: datetime, following: datetime | None
) -> list[tuple[str, Candle]]:
    """(interval, candle) for every interval the bar at `bar` completes, finest first; an
    interval none of whose bars is stored (cannot happen for a stored bar) is left out."""
    out: list[tuple[str, Candle]] = []
    for interval, start in closing(
        instrument.resolution, ZoneInfo(instrument.timezone), bar, following
    ):
        found = await repository.candles(
            conn,
            instrument.symbol,
            interval,
            instrument.timezone,
            start=start,
            end=start + _INSTANT,
            reach=REACH[interval],
            limit=1,
        )
        out.extend((interval, candle) for candle in found)
    return out
