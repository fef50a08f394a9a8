"""The market feed's events (docs/charts.md, "The live feed"; docs/events.md): topic = type,
key = symbol.

- `aether.market.tick.v1` (aether.charts.v1.MarketTick): a price. Published by the replayer
  (replay.py) and by anyone feeding real prices; charts consumes it (feed.py).
- `aether.market.bar_closed.v1` (aether.charts.v1.BarClosed): a bar of one interval is
  complete. Published by the replayer and by charts when a real feed's bar closes.

Identity: every tick and bar has one (`tick_id`, `bar_id`), and the envelope's `ce_id` is the
UUIDv5 of it, so a tick or bar published again (a replayer restarted mid-step, a relay that
sent twice) is the same event to every consumer's de-duplication.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from aether.charts.v1 import charts_pb2, events_pb2
from aether_charts.repository import Candle
from aether_common.events import Event, TopicSpec
from aether_common.events.topics import DAY_MS

SOURCE = "charts"
TICK = "aether.market.tick.v1"
BAR_CLOSED = "aether.market.bar_closed.v1"
TOPICS = (TICK, BAR_CLOSED)
# The namespace of ce_id = uuid5(namespace, identity).
_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "https://aether.dev/events/market")


def topic_specs(prefix: str = "") -> list[TopicSpec]:
    """Ticks are many and only matter live: one day; closed bars a week, like other events."""
    return [
        TopicSpec(prefix + TICK, partitions=6, retention_ms=DAY_MS),
        TopicSpec(prefix + BAR_CLOSED, partitions=6),
    ]


def stamp(time: datetime) -> str:
    """A market time as identities and stream frames write it: RFC 3339 UTC, whole seconds
    unless it has a fraction."""
    utc = time.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def replay_id(pass_: int) -> str:
    return f"replay:{pass_}:"


def tick_id(symbol: str, time: datetime, n: int, *, replay_pass: int | None = None) -> str:
    """A derived tick's identity: the `n`-th (0-3) price of the bar whose tick time is `time`."""
    front = replay_id(replay_pass) if replay_pass is not None else ""
    return f"{front}{symbol}:{stamp(time)}:{n}"


def bar_id(symbol: str, interval: str, start: datetime, *, replay_pass: int | None = None) -> str:
    front = replay_id(replay_pass) if replay_pass is not None else ""
    return f"{front}{symbol}:{interval}:{stamp(start)}"


def event_id(identity: str) -> str:
    return str(uuid.uuid5(_IDS, identity))


def _timestamp(time: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(time.astimezone(UTC))
    return ts


def _replay(pass_: int | None, bar_seconds: float) -> events_pb2.Replay | None:
    if pass_ is None:
        return None
    # `pass` is a Python keyword: the generated field is reached by name.
    return events_pb2.Replay(**{"pass": pass_, "bar_seconds": bar_seconds})


def tick(
    symbol: str,
    identity: str,
    time: datetime,
    price: float,
    size: float,
    *,
    derived: bool,
    replay_pass: int | None = None,
    bar_seconds: float = 0.0,
    topic_prefix: str = "",
) -> Event[events_pb2.MarketTick]:
    payload = events_pb2.MarketTick(
        tick_id=identity,
        symbol=symbol,
        time=_timestamp(time),
        price=price,
        size=size,
        derived=derived,
        replay=_replay(replay_pass, bar_seconds),
    )
    return Event(
        type=topic_prefix + TICK,
        subject=symbol,
        payload=payload,
        source=SOURCE,
        id=event_id(identity),
    )


def bar_closed(
    symbol: str,
    interval: str,
    candle: Candle,
    *,
    replay_pass: int | None = None,
    bar_seconds: float = 0.0,
    topic_prefix: str = "",
) -> Event[events_pb2.BarClosed]:
    identity = bar_id(symbol, interval, candle.time, replay_pass=replay_pass)
    payload = events_pb2.BarClosed(
        bar_id=identity,
        symbol=symbol,
        interval=interval,
        bar=charts_pb2.Candle(
            time=_timestamp(candle.time),
            open=candle.open,
            high=candle.high,
            low=candle.low,
            close=candle.close,
            volume=candle.volume,
        ),
        replay=_replay(replay_pass, bar_seconds),
    )
    return Event(
        type=topic_prefix + BAR_CLOSED,
        subject=symbol,
        payload=payload,
        source=SOURCE,
        id=event_id(identity),
    )
