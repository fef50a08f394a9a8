"""The worker's client of the charts service (aether.charts.v1): a symbol's candles as the
DataFrame `backtesting` takes, and chart images (RenderChart), called as the worker itself
with its own service token (aether_common.service_tokens; auth must grant it `charts:read`).

Failures become what a job attempt needs to know (handler.JobFailed):

| charts answers                          | code              | retryable |
|-----------------------------------------|-------------------|-----------|
| NOT_FOUND (an unknown symbol)           | `unknown_symbol`  | no        |
| INVALID_ARGUMENT (e.g. an interval finer than the stored bars) | `invalid_params` | no |
| UNAVAILABLE, DEADLINE_EXCEEDED, or gRPC could not reach it | `charts_unavailable` | yes |
| anything else (a refused token ...)     | its own code      | yes       |

Candles come in pages of `page_limit` (charts' maximum, 10,000) following `next_cursor`; a
window of more than `max_bars` candles is refused rather than held in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from google.protobuf import timestamp_pb2
from pydantic import StringConstraints

from aether.charts.v1 import charts_pb2, charts_pb2_grpc
from aether_common.errors import AetherError, NotFound, Timeout, Unavailable, ValidationFailed
from aether_common.grpc import Peer, ServiceClient
from aether_worker.handler import JobFailed

# RenderChart stores its image under a key derived from what is drawn: a retried call writes
# the same object, so it is as safe to retry as the reads.
CHARTS = Peer(
    "charts",
    charts_pb2.DESCRIPTOR.services_by_name["ChartsService"],
    charts_pb2_grpc.ChartsServiceStub,
    idempotent=("GetCandles", "RenderChart"),
)
# What charts accepts (services/charts/README.md): its intervals and its tickers.
Interval = Literal["1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M"]
Symbol = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$"
    ),
]
COLUMNS = ("Open", "High", "Low", "Close", "Volume")
PAGE_LIMIT = 10_000
MAX_BARS = 500_000

Token = Callable[[], Awaitable[str]]


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp of an aware datetime (a naive one is taken as UTC)."""
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return out


def job_failure(exc: AetherError, what: str) -> JobFailed:
    """The JobFailed for charts' refusal of `what` (e.g. "GOOG 1d candles")."""
    if isinstance(exc, NotFound):
        return JobFailed("unknown_symbol", f"{what}: {exc.detail}", retryable=False)
    if isinstance(exc, ValidationFailed):
        return JobFailed("invalid_params", f"{what}: {exc.detail}", retryable=False)
    if isinstance(exc, Unavailable | Timeout):
        return JobFailed("charts_unavailable", f"{what}: {exc.detail}", retryable=True)
    return JobFailed(exc.error_code, f"{what}: {exc.detail}", retryable=True)


def frame(candles: list[charts_pb2.Candle], timezone: str) -> pd.DataFrame:
    """Candles as `backtesting` wants them: Open, High, Low, Close, Volume (float64) indexed by
    each candle's start, in the instrument's exchange time zone (`timezone`, IANA)."""
    nanos = np.fromiter(
        (c.time.seconds * 1_000_000_000 + c.time.nanos for c in candles),
        dtype=np.int64,
        count=len(candles),
    )
    index = pd.DatetimeIndex(pd.to_datetime(nanos, unit="ns", utc=True), name="time")
    values = np.array(
        [(c.open, c.high, c.low, c.close, c.volume) for c in candles], dtype=np.float64
    ).reshape(len(candles), len(COLUMNS))
    return pd.DataFrame(values, index=index.tz_convert(timezone or "UTC"), columns=list(COLUMNS))


class ChartsClient(ServiceClient["charts_pb2_grpc.ChartsServiceAsyncStub"]):
    """Component: the channel to charts (readiness does not wait on it: only jobs use it, and
    a job whose charts is away is retried)."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float,
        token: Token,
        page_limit: int = PAGE_LIMIT,
        max_bars: int = MAX_BARS,
    ) -> None:
        super().__init__(CHARTS, target, timeout_s=timeout_s, needs_peer=False)
        self._token = token
        self._page_limit = page_limit
        self._max_bars = max_bars

    async def candles(
        self, symbol: str, interval: str, start: datetime | None, end: datetime | None
    ) -> pd.DataFrame:
        """Every candle of `symbol` at `interval` whose start is in [start, end) (None: from the
        first / to the last stored bar), oldest first; an empty frame when there are none."""
        request = charts_pb2.GetCandlesRequest(
            symbol=symbol, interval=interval, limit=self._page_limit
        )
        if start is not None:
            getattr(request, "from").CopyFrom(timestamp(start))  # `from` is a Python keyword
        if end is not None:
            request.to.CopyFrom(timestamp(end))
        what = f"{symbol} {interval} candles"
        out: list[charts_pb2.Candle] = []
        timezone = "UTC"
        while True:
            try:
                page = await self.call(self.stub.GetCandles, request, token=await self._token())
            except AetherError as exc:
                raise job_failure(exc, what) from exc
            out.extend(page.candles)
            timezone = page.timezone or timezone
            if len(out) > self._max_bars:
                raise JobFailed(
                    "invalid_params",
                    f"{what}: the window holds more than {self._max_bars} candles; "
                    "narrow it with from/to or use a coarser interval",
                    retryable=False,
                )
            if not page.next_cursor:
                return frame(out, timezone)
            request.cursor = page.next_cursor

    async def render_chart(
        self, request: charts_pb2.RenderChartRequest
    ) -> charts_pb2.RenderChartResponse:
        """charts draws (or finds) the picture and answers a presigned URL to it."""
        try:
            return await self.call(self.stub.RenderChart, request, token=await self._token())
        except AetherError as exc:
            raise job_failure(exc, f"{request.symbol} chart") from exc
