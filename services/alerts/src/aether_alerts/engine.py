"""The alert engine: market ticks in, firings out (services/alerts/README.md, "The engine").

A consumer group member of `aether.market.tick.v1` and `aether.market.bar_closed.v1` (keyed
by symbol: the symbols spread over the members). Each member holds every active rule: the price
conditions in a PriceIndex (engine_index.py), `percent_move` in a MoveWatch (engine_moves.py),
the indicator conditions by (symbol, interval) (engine_indicators.py), loaded at start and kept
current by PostgreSQL notifications of rule changes (`alert_rules`, sent by a trigger on `rules`
when a change commits). A tick asks the first two which rules it fires, a bar close reads
charts' values for the third; only those rules are looked at.

Exactly once: the firing is written by `repository.record_firing` in the consumer's transaction
(with its inbox row and the `aether.alert.triggered.v1` event in the outbox), and `firings` is
unique on (rule, trigger): the trigger is "once" for a rule that fires once, the bar (interval
and start) for once per bar, the tick for every time. A redelivered tick, a second replica, a
restart between detecting and recording: the second insert finds the first and writes nothing.
The database also has the last word on cool-down and expiry (record_firing checks them), so the
engine may be a moment behind without a rule firing when it should not.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from aether.charts.v1 import events_pb2 as market
from aether_alerts import repository
from aether_alerts.engine_index import PRICE_CONDITIONS, PriceIndex, PriceRule
from aether_alerts.engine_indicators import (
    INDICATOR_CONDITIONS,
    ChartsReadings,
    IndicatorRule,
    IndicatorWatch,
    fires,
)
from aether_alerts.engine_moves import MoveWatch
from aether_alerts.rules import Frequency, Rule
from aether_common.events import (
    BackgroundConsumer,
    ConsumerOptions,
    Event,
    EventConsumer,
    HandleContext,
    PgIdempotencyStore,
)
from aether_common.logging import get_logger
from aether_common.postgres import PostgresDatabase

log = get_logger(__name__)

TICK = "aether.market.tick.v1"
BAR_CLOSED = "aether.market.bar_closed.v1"
RULES_CHANNEL = "alert_rules"
# Intraday bars lie on a grid from this origin (as charts buckets them).
GRID_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
INTRADAY = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "4h": timedelta(hours=4),
}


# What the engine evaluates: on ticks, and (indicators) when a bar closes.
WATCHED = PRICE_CONDITIONS | {"percent_move"} | INDICATOR_CONDITIONS


def arming_of(rule: Rule) -> Arming:
    return Arming(rule.frequency, rule.interval, describe(rule))


def indicator_rule(rule: Rule) -> IndicatorRule | None:
    if rule.condition not in INDICATOR_CONDITIONS:
        return None
    return IndicatorRule(
        rule.id, rule.symbol, rule.interval, rule.condition, float(rule.value), rule.params or {}
    )


def price_rule(rule: Rule) -> PriceRule | None:
    """What the index needs of a rule, for the conditions a price move decides."""
    if rule.condition not in PRICE_CONDITIONS:
        return None
    params = rule.params or {}
    return PriceRule(
        rule_id=rule.id,
        symbol=rule.symbol,
        condition=rule.condition,
        value=float(rule.value or 0.0),
        lower=float(params.get("lower", 0.0)),
        upper=float(params.get("upper", 0.0)),
    )


def bar_start(interval: str, time: datetime) -> datetime:
    """The start of the `interval` bar holding `time`: intraday on charts' grid, days, Monday
    weeks and months by the UTC calendar (the exchange's zone is charts' to know; a bar of a
    day or longer is told apart by its date, which the UTC calendar gives within hours)."""
    if interval in INTRADAY:
        width = INTRADAY[interval]
        return time - (time - GRID_ORIGIN) % width
    day = datetime(time.year, time.month, time.day, tzinfo=UTC)
    if interval == "1w":
        return day - timedelta(days=day.weekday())
    if interval == "1M":
        return day.replace(day=1)
    return day


def trigger(
    frequency: Frequency, interval: str, tick: market.MarketTick, time: datetime
) -> tuple[str, datetime | None]:
    """What makes a firing unique (see the module docstring), and the bar it belongs to for a
    once-per-bar rule."""
    if frequency is Frequency.ONCE:
        return "once", None
    if frequency is Frequency.ONCE_PER_BAR:
        start = bar_start(interval or "1d", time)
        return f"bar:{interval}:{start.isoformat()}", start
    return tick.tick_id, None


def describe(rule: Rule) -> str:
    """The rule in a few words, for the notification's title."""
    what = rule.condition.replace("_", " ")
    params = rule.params or {}
    if rule.condition in ("entering_channel", "exiting_channel"):
        return f"{what} {params.get('lower', 0):g}-{params.get('upper', 0):g}"
    if rule.condition == "percent_move":
        return f"moved {rule.value:g}% within {params.get('window_s', 0):g} s"
    if rule.condition in ("macd_cross", "price_cross_sma", "price_cross_ema"):
        return f"{what} ({rule.interval})"
    return f"{what} {rule.value:g}"


@dataclass(frozen=True, slots=True)
class Arming:
    """What the engine keeps of a watched rule besides its place in an index: its firing's
    trigger depends on frequency and interval; the title on the rest."""

    frequency: Frequency
    interval: str
    title: str


class AlertEngine(BackgroundConsumer):
    """Component: the consumer group member that evaluates price rules on ticks."""

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        bootstrap: str,
        group_id: str,
        topic_prefix: str = "",
        options: ConsumerOptions | None = None,
        readings: ChartsReadings | None = None,
    ) -> None:
        topics = [topic_prefix + TICK, topic_prefix + BAR_CLOSED]
        super().__init__(bootstrap, topics, group_id=group_id, options=options)
        self._database = database
        # charts' closes and indicators, read as this service (None: no service identity
        # configured, and the indicator rules fire nothing).
        self.readings = readings
        self._prefix = topic_prefix
        self.index = PriceIndex()
        self.moves = MoveWatch()
        self.indicators = IndicatorWatch()
        # Per watched rule, all the engine keeps besides its place in an index.
        self._arming: dict[str, Arming] = {}
        self._passes: dict[str, int] = {}
        self._listener: Any = None
        self._changed: asyncio.Queue[str] = asyncio.Queue()
        self._reloader: asyncio.Task[None] | None = None

    def build(self) -> EventConsumer[Any]:
        consumer = self.new_consumer(PgIdempotencyStore(self._database.pool))
        consumer.add_handler(self.topics[0], market.MarketTick, self.tick)
        consumer.add_handler(self.topics[1], market.BarClosed, self.bar_closed)
        return consumer

    async def prepare(self) -> None:
        """Listen for rule changes first, then load: a change between the two is not lost."""
        if self._listener is None:
            self._listener = await asyncpg.connect(self._database.dsn)
            await self._listener.add_listener(RULES_CHANNEL, self._on_change)
            self._reloader = asyncio.create_task(self._reload_changed(), name="alert-rules")
        async with self._database.connection() as conn:
            rules = await repository.active_rules(conn, None)
        self.index, self.moves, self._arming = PriceIndex(), MoveWatch(), {}
        self.indicators = IndicatorWatch()
        self.index.add_all(p for p in map(price_rule, rules) if p is not None)
        for rule in rules:
            self._watch_others(rule)
            if rule.condition in WATCHED:
                self._arming[rule.id] = arming_of(rule)
        log.info(
            "alert rules loaded",
            rules=len(rules),
            prices=len(self.index),
            moves=len(self.moves),
            indicators=len(self.indicators),
            indicators_evaluated=self.readings is not None,
        )

    async def stop(self) -> None:
        await super().stop()
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

    def _on_change(self, *args: Any) -> None:
        self._changed.put_nowait(str(args[-1]))

    async def _reload_changed(self) -> None:
        while True:
            rule_id = await self._changed.get()
            try:
                async with self._database.connection() as conn:
                    found = await repository.active_rule(conn, rule_id)
            except Exception as exc:  # a later change or a restart loads it again
                log.warning("rule reload failed", rule_id=rule_id, error=repr(exc))
                continue
            self.apply(rule_id, found)

    def apply(self, rule_id: str, rule: Rule | None) -> None:
        """A rule changed: index it as it is now (None: gone, paused, fired or expired)."""
        self.index.remove(rule_id)
        self.moves.remove(rule_id)
        self.indicators.remove(rule_id)
        self._arming.pop(rule_id, None)
        if rule is None or rule.condition not in WATCHED:
            return
        self._arming[rule_id] = arming_of(rule)
        indexed = price_rule(rule)
        if indexed is not None:
            self.index.add(indexed)
        self._watch_others(rule)

    def _watch_others(self, rule: Rule) -> None:
        """Percent moves and indicator rules (the price index takes the rest)."""
        if rule.condition == "percent_move":
            window = float((rule.params or {}).get("window_s", 0))
            self.moves.add(rule.id, rule.symbol, float(rule.value), window)
        indicator = indicator_rule(rule)
        if indicator is not None:
            self.indicators.add(indicator)

    async def tick(self, event: Event[market.MarketTick], ctx: HandleContext[Any]) -> None:
        tick = event.payload
        symbol, time = tick.symbol, tick.time.ToDatetime(tzinfo=UTC)
        replay_pass = getattr(tick.replay, "pass") if tick.HasField("replay") else 0
        if self._passes.get(symbol, replay_pass) != replay_pass:
            # The replay started over: no edge or move across the jump back in time.
            self.index.reset(symbol)
            self.moves.reset(symbol)
        self._passes[symbol] = replay_pass
        fired = self.index.move(symbol, tick.price) + self.moves.move(symbol, time, tick.price)
        for rule_id in fired:
            arming = self._arming.get(rule_id)
            if arming is None:
                continue
            trigger_id, bar = trigger(arming.frequency, arming.interval, tick, time)
            await repository.record_firing(
                ctx.tx,
                rule_id,
                trigger_id=trigger_id,
                price=tick.price,
                market_time=time,
                title=f"{symbol} {arming.title}",
                body=f"{symbol} traded at {tick.price:g} at {time.isoformat()}",
                bar_start=bar,
                topic_prefix=self._prefix,
            )

    async def bar_closed(self, event: Event[market.BarClosed], ctx: HandleContext[Any]) -> None:
        """The indicator rules of the bar's (symbol, interval), on charts' values for it."""
        closed = event.payload
        rules = self.indicators.rules(closed.symbol, closed.interval)
        if not rules or self.readings is None:
            return
        start = closed.bar.time.ToDatetime(tzinfo=UTC)
        reading = await self.readings.read(
            closed.symbol, closed.interval, start, (r.spec() for r in rules)
        )
        for rule in rules:
            arming = self._arming.get(rule.rule_id)
            if arming is None or not fires(rule, reading):
                continue
            if arming.frequency is Frequency.ONCE:
                trigger_id, bar = "once", start
            elif arming.frequency is Frequency.ONCE_PER_BAR:
                trigger_id, bar = f"bar:{closed.interval}:{start.isoformat()}", start
            else:
                trigger_id, bar = closed.bar_id, None
            await repository.record_firing(
                ctx.tx,
                rule.rule_id,
                trigger_id=trigger_id,
                price=closed.bar.close,
                market_time=start,
                title=f"{closed.symbol} {arming.title}",
                body=(
                    f"{closed.symbol} {closed.interval} bar of {start.isoformat()} closed at"
                    f" {closed.bar.close:g}"
                ),
                bar_start=bar,
                topic_prefix=self._prefix,
            )
