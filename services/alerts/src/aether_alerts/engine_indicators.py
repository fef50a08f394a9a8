"""Indicator rules, evaluated when a bar closes, on the charts service's own values: the numbers
the user's chart shows, not a second implementation.

| condition         | fires when the bar that closed ...                          |
|-------------------|-------------------------------------------------------------|
| `rsi_above`       | has RSI(period) above `value`                               |
| `rsi_below`       | has RSI(period) below `value`                               |
| `macd_cross`      | has MACD and its signal line on the other side than before  |
| `price_cross_sma` | has its close on the other side of SMA(period) than before  |
| `price_cross_ema` | the same with EMA(period)                                   |

"Before" is the bar before it (a cross is a change of side between two closed bars, either
way; touching counts as the side it came from). A value charts cannot compute yet (too little
history) fires nothing. Rules are grouped by (symbol, interval): a bar close costs one
GetIndicators call for every indicator its rules use, and one GetCandles for the closes.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from aether.charts.v1 import charts_pb2, charts_pb2_grpc  # noqa: F401 (the stub type below)
from aether_alerts.market import CHARTS
from aether_common.grpc import ServiceClient

INDICATOR_CONDITIONS = frozenset(
    {"rsi_above", "rsi_below", "macd_cross", "price_cross_sma", "price_cross_ema"}
)
_INSTANT = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class IndicatorRule:
    rule_id: str
    symbol: str
    interval: str
    condition: str
    value: float
    params: Mapping[str, float]

    def spec(self) -> str:
        """The charts indicator it reads, parameters filled in (e.g. "macd:12:26:9")."""
        p = self.params
        if self.condition in ("rsi_above", "rsi_below"):
            return f"rsi:{int(p.get('period', 14))}"
        if self.condition == "macd_cross":
            defaults = (("fast", 12), ("slow", 26), ("signal", 9))
            fast, slow, signal = (int(p.get(k, d)) for k, d in defaults)
            return f"macd:{fast}:{slow}:{signal}"
        kind = "sma" if self.condition == "price_cross_sma" else "ema"
        return f"{kind}:{int(p.get('period', 20))}"


@dataclass(frozen=True, slots=True)
class Reading:
    """The two last closed bars of a (symbol, interval): closes and indicator outputs, each as
    (the bar before, the bar that closed)."""

    closes: tuple[float, float]
    outputs: Mapping[tuple[str, str], tuple[float, float]]


def _side_changed(before: float, after: float) -> bool:
    if math.isnan(before) or math.isnan(after):
        return False
    return (before <= 0 < after) or (before >= 0 > after)


def fires(rule: IndicatorRule, reading: Reading) -> bool:
    spec, c = rule.spec(), rule.condition
    if c in ("rsi_above", "rsi_below"):
        rsi = reading.outputs.get((spec, "rsi"), (math.nan, math.nan))[1]
        if math.isnan(rsi):
            return False
        return rsi > rule.value if c == "rsi_above" else rsi < rule.value
    if c == "macd_cross":
        macd = reading.outputs.get((spec, "macd"), (math.nan, math.nan))
        signal = reading.outputs.get((spec, "signal"), (math.nan, math.nan))
        return _side_changed(macd[0] - signal[0], macd[1] - signal[1])
    name = spec.split(":", 1)[0]
    average = reading.outputs.get((spec, name), (math.nan, math.nan))
    close = reading.closes
    return _side_changed(close[0] - average[0], close[1] - average[1])


class IndicatorWatch:
    """The indicator rules, by (symbol, interval)."""

    def __init__(self) -> None:
        self._by_bar: dict[tuple[str, str], dict[str, IndicatorRule]] = {}
        self._where: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def add(self, rule: IndicatorRule) -> None:
        self.remove(rule.rule_id)
        key = (rule.symbol, rule.interval)
        self._by_bar.setdefault(key, {})[rule.rule_id] = rule
        self._where[rule.rule_id] = key

    def remove(self, rule_id: str) -> None:
        key = self._where.pop(rule_id, None)
        if key is not None:
            rules = self._by_bar[key]
            del rules[rule_id]
            if not rules:
                del self._by_bar[key]

    def rules(self, symbol: str, interval: str) -> list[IndicatorRule]:
        return list(self._by_bar.get((symbol, interval), {}).values())


Token = Callable[[], Awaitable[str]]


class ChartsReadings(ServiceClient["charts_pb2_grpc.ChartsServiceAsyncStub"]):
    """Component: reads charts' closes and indicators for a closed bar, as this service
    (`token`: its own access token, aether_common.service_tokens)."""

    def __init__(self, target: str, *, timeout_s: float, token: Token) -> None:
        super().__init__(
            CHARTS, target, timeout_s=timeout_s, needs_peer=False, name="charts-readings"
        )
        self._token = token

    async def read(
        self, symbol: str, interval: str, bar: datetime, specs: Iterable[str]
    ) -> Reading:
        """The closes and indicator outputs of the bar starting at `bar` and the one before."""
        to = timestamp_pb2.Timestamp()
        to.FromDatetime((bar + _INSTANT).astimezone(UTC))
        token = await self._token()
        candles = await self.call(
            self.stub.GetCandles,
            charts_pb2.GetCandlesRequest(
                symbol=symbol, interval=interval, to=to, limit=2, latest=True
            ),
            token=token,
        )
        indicators = await self.call(
            self.stub.GetIndicators,
            charts_pb2.GetIndicatorsRequest(
                symbol=symbol,
                interval=interval,
                to=to,
                limit=2,
                latest=True,
                indicators=",".join(sorted(set(specs))),
            ),
            token=token,
        )
        closes = [c.close for c in candles.candles]
        if len(closes) < 2:
            closes = [math.nan, *closes][-2:] if closes else [math.nan, math.nan]
        outputs: dict[tuple[str, str], tuple[float, float]] = {}
        for series in indicators.series:
            values = list(series.values)[-2:]
            values = [math.nan] * (2 - len(values)) + values
            outputs[(series.indicator, series.output)] = (values[0], values[1])
        return Reading((closes[0], closes[1]), outputs)
