"""Market data for Analyze from the charts service: a symbol's last candles (`latest`) and
charts' own TA-Lib indicators over them (the numbers its charts show), called with the caller's
token (the outgoing interceptor forwards it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aether.charts.v1 import charts_pb2, charts_pb2_grpc
from aether_ai.analysis import Bars
from aether_common.errors import Unavailable
from aether_common.grpc import Peer, ServiceClient

CHARTS = Peer(
    "charts",
    charts_pb2.DESCRIPTOR.services_by_name["ChartsService"],
    charts_pb2_grpc.ChartsServiceStub,
    idempotent=("GetCandles", "GetIndicators"),
)
INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M")
# charts' indicators in the summary (Summary's sma20, sma50 and rsi14).
INDICATORS = ("sma:20", "sma:50", "rsi:14")


class ChartsNotConfigured(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "analysis by symbol needs the charts service (AI_CHARTS_GRPC_TARGET); send bars",
            code="charts_not_configured",
        )


@dataclass(frozen=True, slots=True)
class Recent:
    bars: Bars
    # charts' values on the last candle (None: history too short).
    sma20: float | None
    sma50: float | None
    rsi14: float | None


class MarketClient(ServiceClient["charts_pb2_grpc.ChartsServiceAsyncStub"]):
    """Component: the channel to charts (never blocks readiness: only Analyze by symbol uses
    it, and answers 503 while charts is away)."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        super().__init__(CHARTS, target, timeout_s=timeout_s, needs_peer=False)

    async def recent(
        self, symbol: str, interval: str, count: int, *, token: str | None = None
    ) -> Recent:
        """The last `count` candles of `symbol` and charts' indicators on the last one.
        `token`: sent instead of the identity of the call being served (tools, tests)."""
        candles_request = charts_pb2.GetCandlesRequest(
            symbol=symbol, interval=interval, limit=count, latest=True
        )
        candles = await self.call(self.stub.GetCandles, candles_request, token=token)
        last = list(candles.candles)
        indicators_request = charts_pb2.GetIndicatorsRequest(
            symbol=symbol,
            interval=interval,
            limit=count,
            latest=True,
            indicators=",".join(INDICATORS),
        )
        indicators = await self.call(self.stub.GetIndicators, indicators_request, token=token)
        values = {s.indicator: s.values for s in indicators.series}

        def latest(spec: str) -> float | None:
            series = values.get(spec)
            return _finite(series[-1]) if series else None

        def column(name: str) -> np.ndarray:
            return np.array([getattr(c, name) for c in last], dtype=np.float64)

        bars = Bars(
            times=np.array([c.time.ToSeconds() for c in last], dtype=np.float64),
            open=column("open"),
            high=column("high"),
            low=column("low"),
            close=column("close"),
            volume=column("volume"),
        )
        return Recent(bars, latest("sma:20"), latest("sma:50"), latest("rsi:14"))


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
