"""The engine against real PostgreSQL and Kafka: market ticks in, firings out, exactly once; rule
changes reach it through PostgreSQL notifications."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import timestamp_pb2

from aether.alerts.v1 import alerts_pb2
from aether.charts.v1 import charts_pb2, events_pb2
from aether_alerts.engine_indicators import ChartsReadings
from aether_common.events import Event, EventProducer
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import ScriptedPeer, eventually

T0 = datetime(2026, 12, 7, 14, 30, tzinfo=UTC)


@pytest.fixture
async def producer(aether_endpoints: Endpoints) -> AsyncIterator[EventProducer]:
    producer = EventProducer(aether_endpoints.kafka_bootstrap, linger_ms=0)
    await producer.start()
    yield producer
    await producer.stop()


class Market:
    """Publishes ticks on the test's tick topic, as a feed (or charts' replayer) does."""

    def __init__(self, producer: EventProducer, prefix: str) -> None:
        self.producer, self.prefix, self.n = producer, prefix, 0

    async def tick(self, symbol: str, price: float, at: timedelta, *, again: str = "") -> str:
        self.n += 1
        tick_id = again or f"{symbol}:{self.n}"
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(T0 + at)
        await self.producer.publish(
            Event(
                type=self.prefix + "aether.market.tick.v1",
                subject=symbol,
                payload=events_pb2.MarketTick(
                    tick_id=tick_id, symbol=symbol, time=ts, price=price, size=1
                ),
                source="test-feed",
                id=f"ev-{tick_id}",
            )
        )
        return tick_id


async def engine_started(start_alerts: Any, topic_prefix: str) -> Any:
    alerts = await start_alerts(events=True, topic_prefix=topic_prefix)
    await eventually(lambda: alerts.app.engine.consumer is not None, within=30, what="engine")
    return alerts


async def indexed(alerts: Any, count: int) -> None:
    await eventually(
        lambda: len(alerts.app.engine.index) == count, within=10, what=f"{count} rules indexed"
    )


async def firings(alerts: Any, user: str, rule_id: str) -> list[alerts_pb2.Firing]:
    found = await alerts.stub.ListFirings(
        alerts_pb2.ListFiringsRequest(rule_id=rule_id), metadata=alerts.auth(user)
    )
    return list(found.firings)


async def settled(alerts: Any, user: str, rule_id: str, count: int) -> list[alerts_pb2.Firing]:
    """The rule's firings once there are `count`, checked again a moment later (no more)."""

    async def enough() -> list[alerts_pb2.Firing] | None:
        got = await firings(alerts, user, rule_id)
        return got if len(got) >= count else None

    await eventually(enough, within=20, what=f"{count} firings")
    await asyncio.sleep(1.0)  # what was still on its way has been handled by now
    return await firings(alerts, user, rule_id)


async def test_a_crossing_fires_once_into_the_inbox_and_a_redelivery_changes_nothing(
    start_alerts: Any, topic_prefix: str, producer: EventProducer
) -> None:
    alerts = await engine_started(start_alerts, topic_prefix)
    rule = await alerts.create("trader", condition="crossing_up", value=195.0, frequency="once")
    await indexed(alerts, 1)
    market = Market(producer, topic_prefix)
    await market.tick("AAPL", 190.0, timedelta(seconds=1))
    crossed = await market.tick("AAPL", 196.0, timedelta(seconds=2))
    await market.tick("AAPL", 196.0, timedelta(seconds=2), again=crossed)  # redelivered
    await market.tick("AAPL", 190.0, timedelta(seconds=3))
    await market.tick("AAPL", 197.0, timedelta(seconds=4))  # crosses again: a once rule is done
    await market.tick("MSFT", 500.0, timedelta(seconds=4))  # another symbol: nothing

    got = await settled(alerts, "trader", rule.id, 1)
    await indexed(alerts, 0)  # fired: the notification took it out of the index
    assert [(f.price, f.trigger_id) for f in got] == [(196.0, "once")]
    inbox = await alerts.stub.ListNotifications(
        alerts_pb2.ListNotificationsRequest(), metadata=alerts.auth("trader")
    )
    assert len(inbox.notifications) == 1
    assert "AAPL" in inbox.notifications[0].title
    stored = await alerts.stub.GetRule(
        alerts_pb2.GetRuleRequest(id=rule.id), metadata=alerts.auth("trader")
    )
    assert stored.rule.status == "fired"


async def test_once_per_bar_fires_once_in_each_bar(
    start_alerts: Any, topic_prefix: str, producer: EventProducer
) -> None:
    alerts = await engine_started(start_alerts, topic_prefix)
    rule = await alerts.create(
        "trader", condition="price_above", value=200.0, frequency="once_per_bar", interval="1m"
    )
    await indexed(alerts, 1)
    market = Market(producer, topic_prefix)
    for second, price in ((1, 201.0), (20, 202.0), (40, 203.0), (61, 204.0), (62, 205.0)):
        await market.tick("AAPL", price, timedelta(seconds=second))
    got = await settled(alerts, "trader", rule.id, 2)
    assert sorted(f.price for f in got) == [201.0, 204.0]


async def test_a_paused_rule_leaves_the_index_and_a_new_one_joins_it(
    start_alerts: Any, topic_prefix: str, producer: EventProducer
) -> None:
    alerts = await engine_started(start_alerts, topic_prefix)
    paused = await alerts.create("trader", condition="price_below", value=180.0)
    await indexed(alerts, 1)
    await alerts.stub.PauseRule(
        alerts_pb2.PauseRuleRequest(id=paused.id), metadata=alerts.auth("trader")
    )
    await indexed(alerts, 0)
    live = await alerts.create("trader", condition="price_below", value=185.0)
    await indexed(alerts, 1)
    market = Market(producer, topic_prefix)
    await market.tick("AAPL", 170.0, timedelta(seconds=1))
    assert [f.price for f in await settled(alerts, "trader", live.id, 1)] == [170.0]
    assert await firings(alerts, "trader", paused.id) == []


async def test_a_percent_move_within_its_window_fires(
    start_alerts: Any, topic_prefix: str, producer: EventProducer
) -> None:
    alerts = await engine_started(start_alerts, topic_prefix)
    rule = await alerts.create(
        "trader", condition="percent_move", value=5.0, params={"window_s": 60}
    )
    await eventually(lambda: len(alerts.app.engine.moves) == 1, within=10, what="move watched")
    market = Market(producer, topic_prefix)
    await market.tick("AAPL", 100.0, timedelta(seconds=0))
    await market.tick("AAPL", 104.0, timedelta(seconds=30))  # the window is not covered yet
    await market.tick("AAPL", 104.5, timedelta(seconds=61))  # +4.5% against 100: not enough
    await market.tick("AAPL", 109.5, timedelta(seconds=95))  # +5.3% against 104 (30 s)
    got = await settled(alerts, "trader", rule.id, 1)
    assert [f.price for f in got] == [109.5]
    note = await alerts.stub.ListNotifications(
        alerts_pb2.ListNotificationsRequest(), metadata=alerts.auth("trader")
    )
    assert note.notifications[0].title == "AAPL moved 5% within 60 s"


def bar_closed(prefix: str, symbol: str, interval: str, start: datetime, close: float) -> Any:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(start)
    bar_id = f"{symbol}:{interval}:{start.isoformat()}"
    return Event(
        type=prefix + "aether.market.bar_closed.v1",
        subject=symbol,
        payload=events_pb2.BarClosed(
            bar_id=bar_id,
            symbol=symbol,
            interval=interval,
            bar=charts_pb2.Candle(time=ts, open=close, high=close, low=close, close=close),
        ),
        source="charts",
        id=f"ev-{bar_id}",
    )


async def test_indicator_rules_fire_on_bar_closes_with_charts_values(
    start_alerts: Any, topic_prefix: str, producer: EventProducer, charts_peer: ScriptedPeer
) -> None:
    """charts (scripted here: its own suite tests its values) answers the last two closed
    bars' closes, RSI 14 and SMA 20; the engine asks as this service, with its own token."""
    alerts = await engine_started(start_alerts, topic_prefix)
    readings = ChartsReadings(charts_peer.address, timeout_s=5, token=service_token)
    await readings.start()
    alerts.app.engine.readings = readings
    values = {"rsi": (65.0, 75.0), "sma": (100.0, 100.0)}
    closes = (99.0, 101.0)

    def candles(request: charts_pb2.GetCandlesRequest) -> charts_pb2.GetCandlesResponse:
        return charts_pb2.GetCandlesResponse(candles=[charts_pb2.Candle(close=c) for c in closes])

    def indicators(request: charts_pb2.GetIndicatorsRequest) -> charts_pb2.GetIndicatorsResponse:
        series = []
        for spec in request.indicators.split(","):
            name = spec.split(":")[0]
            series.append(
                charts_pb2.IndicatorSeries(indicator=spec, output=name, values=list(values[name]))
            )
        return charts_pb2.GetIndicatorsResponse(series=series)

    charts_peer.answers |= {"GetCandles": candles, "GetIndicators": indicators}
    try:
        rsi = await alerts.create(
            "trader", condition="rsi_above", value=70.0, interval="1d", params={"period": 14}
        )
        cross = await alerts.create(
            "trader",
            condition="price_cross_sma",
            value=0.0,
            interval="1d",
            params={"period": 20},
            frequency="every_time",
            cooldown_s=60,
        )
        other = await alerts.create("trader", condition="rsi_below", value=30.0, interval="1d")
        await eventually(lambda: len(alerts.app.engine.indicators) == 3, within=10, what="3")
        day = datetime(2013, 3, 1, 5, tzinfo=UTC)
        await producer.publish(bar_closed(topic_prefix, "AAPL", "1d", day, 101.0))
        await producer.publish(bar_closed(topic_prefix, "AAPL", "1h", day, 101.0))  # no rule

        fired = await settled(alerts, "trader", rsi.id, 1)
        assert [(f.price, f.trigger_id) for f in fired] == [(101.0, "once")]
        crossed = await firings(alerts, "trader", cross.id)
        assert [f.trigger_id for f in crossed] == ["AAPL:1d:2013-03-01T05:00:00+00:00"]
        assert await firings(alerts, "trader", other.id) == []
        (asked,) = charts_peer.calls_to("GetIndicators")
        assert asked.request.indicators == "rsi:14,sma:20"
        assert asked.request.latest
        assert asked.request.to.ToDatetime(tzinfo=UTC) == day + timedelta(microseconds=1)
        assert asked.metadata.get("authorization") == "Bearer service-token"
    finally:
        await readings.stop()


async def service_token() -> str:
    return "service-token"
