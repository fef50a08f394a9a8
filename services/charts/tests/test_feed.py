"""The live feed against real PostgreSQL, Kafka (tansu) and Redis: the replayer's ticks, bar
closes, identities and resume; real ticks stored into bars with their closes; live frames."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from redis.asyncio import Redis

from aether.charts.v1 import charts_pb2, events_pb2
from aether_charts import market_events
from aether_charts.replay import Replayer
from aether_common.events import Event, EventProducer, event_from_record
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import eventually, read_topic

# Six NY trading days, Wednesday 2024-01-03 to Wednesday 2024-01-10: a week ends after the
# third bar (Friday), the month does not.
DAYS = ["2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08", "2024-01-09", "2024-01-10"]
CSV = "time,open,high,low,close,volume\n" + "".join(
    f"{d},{100 + i},{104 + i},{98 + i},{101 + i},{1000 * (i + 1)}\n" for i, d in enumerate(DAYS)
)


def midnight_ny(day: str) -> datetime:
    return datetime.fromisoformat(day + "T05:00:00+00:00")  # EST, no DST in January


async def feed_started(start_charts: Any, topic_prefix: str, **overrides: Any) -> Any:
    charts = await start_charts(events=True, topic_prefix=topic_prefix, **overrides)
    await charts.import_bars("RPL", CSV, resolution="1d", timezone="America/New_York")
    return charts


def replayer(charts: Any, **kw: Any) -> Replayer:
    s = charts.app.settings
    return Replayer(
        charts.app.database,
        symbols=["RPL"],
        bar_seconds=kw.get("bar_seconds", 1.0),
        topic_prefix=s.topic_prefix,
    )


async def events_of(charts: Any, topic: str, count: int, message: Any) -> list[Event[Any]]:
    s = charts.app.settings
    records = await read_topic(s.kafka_bootstrap, s.topic_prefix + topic, count, settle=0.5)
    return [event_from_record(r.headers, r.value, message) for r in records]


async def test_the_replay_plays_each_bar_as_four_derived_ticks_then_its_closes(
    start_charts: Any, topic_prefix: str
) -> None:
    charts = await feed_started(start_charts, topic_prefix)
    replay = replayer(charts)
    for _ in range(4 * 3):  # three bars: Wed, Thu, Fri
        await replay.step()

    ticks = await events_of(charts, market_events.TICK, 12, events_pb2.MarketTick)
    first = [t.payload for t in ticks[:4]]
    # Bar 0: open 100, high 104, low 98, close 101: the low (2 away) is nearer than the high.
    assert [t.price for t in first] == [100, 98, 104, 101]
    assert all(t.derived and getattr(t.replay, "pass") == 1 for t in first)
    assert [t.time.ToDatetime(tzinfo=UTC) for t in first] == [
        midnight_ny(DAYS[0]) + timedelta(hours=6 * n) for n in range(4)
    ]
    assert [t.size for t in first] == [250.0] * 4
    assert first[0].tick_id == "replay:1:RPL:2024-01-03T05:00:00Z:0"
    assert ticks[0].id == market_events.event_id(first[0].tick_id)
    assert ticks[0].subject == "RPL"

    closed = await events_of(charts, market_events.BAR_CLOSED, 4, events_pb2.BarClosed)
    got = [(c.payload.interval, c.payload.bar.time.ToDatetime(tzinfo=UTC)) for c in closed]
    assert got == [
        ("1d", midnight_ny(DAYS[0])),
        ("1d", midnight_ny(DAYS[1])),
        ("1d", midnight_ny(DAYS[2])),
        # Friday completes the week that began on Monday 2024-01-01 (a holiday: no bar).
        ("1w", midnight_ny("2024-01-01")),
    ]
    week = closed[3].payload
    assert (week.bar.open, week.bar.high, week.bar.low, week.bar.close) == (100, 106, 98, 103)
    assert week.bar.volume == 6000
    assert week.bar_id == "replay:1:RPL:1w:2024-01-01T05:00:00Z"


async def test_a_restarted_replay_resumes_after_its_last_step_and_loops_with_a_new_pass(
    start_charts: Any, topic_prefix: str
) -> None:
    charts = await feed_started(start_charts, topic_prefix)
    first = replayer(charts)
    for _ in range(6):  # bar 0 whole, bar 1 half
        await first.step()
    second = replayer(charts)  # a new process: only the database remembers
    for _ in range(2 + 4 * 4 + 1):  # the rest of bar 1, bars 2-5, then the next pass begins
        await second.step()

    ticks = await events_of(charts, market_events.TICK, 25, events_pb2.MarketTick)
    ids = [t.payload.tick_id for t in ticks]
    assert len(ids) == len(set(ids)) == 25, "a tick was played twice or skipped"
    assert [t.payload.tick_id.rsplit(":", 1)[1] for t in ticks[:24]] == ["0", "1", "2", "3"] * 6
    last = ticks[24].payload
    assert getattr(last.replay, "pass") == 2
    assert last.tick_id == "replay:2:RPL:2024-01-03T05:00:00Z:0"

    closed = await events_of(charts, market_events.BAR_CLOSED, 9, events_pb2.BarClosed)
    intervals = [c.payload.interval for c in closed]
    # Six days, the Friday week, and at the end of the data the open week and month close.
    assert intervals == ["1d", "1d", "1d", "1w", "1d", "1d", "1d", "1w", "1M"]


async def test_replayed_ticks_are_not_stored_again(start_charts: Any, topic_prefix: str) -> None:
    charts = await feed_started(start_charts, topic_prefix)
    before = await charts.all_candles("RPL", interval="1d")
    replay = replayer(charts)
    for _ in range(8):
        await replay.step()
    await events_of(charts, market_events.TICK, 8, events_pb2.MarketTick)
    await asyncio.sleep(1.0)  # the consumer has had them (the frames test shows it consumes)
    assert await charts.all_candles("RPL", interval="1d") == before


def tick(symbol: str, time: datetime, price: float, size: float, trade: str) -> Event[Any]:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(time)
    payload = events_pb2.MarketTick(
        tick_id=trade, symbol=symbol, time=ts, price=price, size=size, derived=False
    )
    return Event(type="", subject=symbol, payload=payload, source="test-feed", id=f"trade-{trade}")


@pytest.fixture
async def producer(aether_endpoints: Endpoints) -> AsyncIterator[EventProducer]:
    producer = EventProducer(aether_endpoints.kafka_bootstrap, linger_ms=0)
    await producer.start()
    yield producer
    await producer.stop()


async def send(producer: EventProducer, prefix: str, *events: Event[Any]) -> None:
    for event in events:
        topic = prefix + market_events.TICK
        await producer.publish(
            Event(
                type=topic,
                subject=event.subject,
                payload=event.payload,
                source=event.source,
                id=event.id,
            )
        )


async def test_real_ticks_build_minute_bars_and_close_them_once(
    start_charts: Any, topic_prefix: str, producer: EventProducer
) -> None:
    charts = await start_charts(events=True, topic_prefix=topic_prefix)
    t0 = datetime(2026, 12, 7, 14, 30, tzinfo=UTC)
    first = [
        tick("NEWCO", t0 + timedelta(seconds=1), 10.0, 5, "a"),
        tick("NEWCO", t0 + timedelta(seconds=20), 12.5, 1, "b"),
        tick("NEWCO", t0 + timedelta(seconds=40), 9.5, 2, "c"),
    ]
    await send(producer, topic_prefix, *first, first[1])  # "b" delivered twice
    await send(producer, topic_prefix, tick("NEWCO", t0 + timedelta(seconds=61), 11.0, 3, "d"))

    async def bars() -> list[Any]:
        return await stored(charts, "NEWCO")

    got = await eventually(lambda: _two(bars), within=20, what="the second minute's bar")
    one, two = got
    assert (one.open, one.high, one.low, one.close, one.volume) == (10.0, 12.5, 9.5, 9.5, 8)
    assert (two.open, two.high, two.low, two.close, two.volume) == (11.0, 11.0, 11.0, 11.0, 3)

    # A late tick for the first minute amends it, but not its close, and closes nothing again.
    await send(producer, topic_prefix, tick("NEWCO", t0 + timedelta(seconds=50), 13.0, 1, "e"))
    amended = await eventually(
        lambda: _first_high(bars, 13.0), within=20, what="the late tick stored"
    )
    assert (amended.close, amended.volume) == (9.5, 9)

    closed = await events_of(charts, market_events.BAR_CLOSED, 1, events_pb2.BarClosed)
    assert len(closed) == 1, "the first minute closes once, when the second begins"
    bar = closed[0].payload
    assert (bar.interval, bar.bar_id) == ("1m", "NEWCO:1m:2026-12-07T14:30:00Z")
    assert (bar.bar.open, bar.bar.close, bar.bar.volume) == (10.0, 9.5, 8)
    assert not bar.HasField("replay")

    symbols = await charts.stub.ListSymbols(
        charts_pb2.ListSymbolsRequest(q="NEWCO"), metadata=charts.auth("reader")
    )
    assert [(i.symbol, i.resolution, i.timezone) for i in symbols.instruments] == [
        ("NEWCO", "1m", "UTC")
    ]


async def stored(charts: Any, symbol: str) -> list[Any]:
    """The symbol's minute candles; none while the feed has not brought the symbol in yet."""
    try:
        return list(await charts.all_candles(symbol, interval="1m"))
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return []
        raise


async def _two(bars: Any) -> list[Any] | None:
    got = await bars()
    return got if len(got) == 2 else None


async def _first_high(bars: Any, high: float) -> Any:
    got = await bars()
    return got[0] if got and got[0].high == high else None


async def test_every_tick_and_closed_bar_is_a_live_frame_on_redis(
    start_charts: Any, topic_prefix: str, aether_endpoints: Endpoints, redis_prefix: str
) -> None:
    charts = await feed_started(start_charts, topic_prefix, stream_prefix=redis_prefix)
    redis = Redis.from_url(aether_endpoints.redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{redis_prefix}symbol:RPL")
    try:
        replay = replayer(charts)
        for _ in range(4):
            await replay.step()
        frames: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + 30
        while len(frames) < 5:
            assert asyncio.get_running_loop().time() < deadline, f"frames so far: {frames}"
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                frames.append(json.loads(message["data"]))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
    ticks = [f for f in frames if f["type"] == "tick"]
    bars = [f for f in frames if f["type"] == "bar"]
    assert [t["price"] for t in ticks] == [100, 98, 104, 101]
    assert ticks[0] == {
        "type": "tick",
        "symbol": "RPL",
        "id": "replay:1:RPL:2024-01-03T05:00:00Z:0",
        "time": "2024-01-03T05:00:00Z",
        "price": 100.0,
        "size": 250.0,
        "derived": True,
        "replay": {"pass": 1, "bar_seconds": 1.0},
    }
    assert bars == [
        {
            "type": "bar",
            "symbol": "RPL",
            "interval": "1d",
            "id": "replay:1:RPL:1d:2024-01-03T05:00:00Z",
            "time": "2024-01-03T05:00:00Z",
            "open": 100.0,
            "high": 104.0,
            "low": 98.0,
            "close": 101.0,
            "volume": 1000.0,
            "closed": True,
            "replay": {"pass": 1, "bar_seconds": 1.0},
        }
    ]


async def test_a_tick_that_cannot_be_a_price_is_parked_on_the_dlq(
    start_charts: Any, topic_prefix: str, producer: EventProducer
) -> None:
    charts = await start_charts(events=True, topic_prefix=topic_prefix)
    t0 = datetime(2026, 12, 7, 14, 30, tzinfo=UTC)
    await send(producer, topic_prefix, tick("BAD", t0, -1.0, 1, "neg"))
    await send(producer, topic_prefix, tick("GOOD", t0, 5.0, 1, "ok"))
    s = charts.app.settings
    parked = await read_topic(s.kafka_bootstrap, s.topic_prefix + market_events.TICK + ".dlq", 1)
    assert len(parked) == 1
    good = await eventually(lambda: stored(charts, "GOOD"), within=20, what="GOOD stored")
    assert good[0].close == 5.0
