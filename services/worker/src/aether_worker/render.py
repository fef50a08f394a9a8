"""The `chart.render` job: a chart image through the charts service's RenderChart, which draws
it (or finds it already drawn: `cached`) in its own bucket and answers a presigned URL.

Parameters are RenderChartRequest's (protos/aether/charts/v1/charts.proto):

    {"symbol": "AAPL", "interval"?: "1d", "from"?, "to"?, "limit"?: 0, "overlays"?: "sma:20",
     "width"?: 0, "height"?: 0, "style"?: ""}

checked here against charts' documented bounds (services/charts/README.md: at most 5 overlay
items, sides of 200-3,000 pixels, at most 2,000 candles, its styles; 0 or empty: charts'
default) so an obviously bad job is refused before it is queued; charts checks them again with
its own settings (a refusal there fails the job, not retried). The result:
`{"url", "expires_at", "key", "cached"}`; the URL expires (charts' CHARTS_RENDER_URL_EXPIRY_S,
15 minutes by default): run the job again for a fresh one, which finds the image stored.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from aether.charts.v1 import charts_pb2
from aether_worker.candles import Interval, Symbol, timestamp
from aether_worker.handler import JobContext, JobType

MAX_OVERLAYS = 5
MIN_SIDE, MAX_SIDE = 200, 3_000
MAX_LIMIT = 2_000
# charts' render.STYLES (mplfinance styles); empty means charts' default ("yahoo").
Style = Literal["", "yahoo", "charles", "binance", "classic", "mike", "nightclouds", "default"]
# An item of GetIndicators' syntax: `name[:param...]`, e.g. "bbands:20:2".
_OVERLAY = re.compile(r"[a-z][a-z0-9_]*(:-?[0-9]+(\.[0-9]+)?)*")


class ChartRenderer(Protocol):
    async def render_chart(
        self, request: charts_pb2.RenderChartRequest
    ) -> charts_pb2.RenderChartResponse:
        """charts' answer; JobFailed when it refuses or is away (candles.py)."""
        ...


class RenderParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    symbol: Symbol
    # None: the instrument's stored resolution.
    interval: Interval | None = None
    start: datetime | None = Field(default=None, alias="from")
    end: datetime | None = Field(default=None, alias="to")
    limit: int = Field(default=0, ge=0, le=MAX_LIMIT)
    overlays: str = ""
    width: int = 0
    height: int = 0
    style: Style = ""

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, moment: datetime | None) -> datetime | None:
        return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment

    @field_validator("overlays")
    @classmethod
    def _overlays(cls, text: str) -> str:
        items = [item.strip().lower() for item in text.split(",") if item.strip()]
        if len(items) > MAX_OVERLAYS:
            raise ValueError(f"at most {MAX_OVERLAYS} indicators, not {len(items)}")
        for item in items:
            if not _OVERLAY.fullmatch(item):
                raise ValueError(f"{item!r} is not an indicator as name[:param...] (sma:20)")
        return ",".join(items)

    @field_validator("width", "height")
    @classmethod
    def _side(cls, pixels: int) -> int:
        if pixels != 0 and not MIN_SIDE <= pixels <= MAX_SIDE:
            raise ValueError(f"must be 0 (the default) or {MIN_SIDE}-{MAX_SIDE} pixels")
        return pixels

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start")
        if end is not None and start is not None and end < start:
            raise ValueError("to must not be before from")
        return end

    def request(self) -> charts_pb2.RenderChartRequest:
        request = charts_pb2.RenderChartRequest(
            symbol=self.symbol,
            interval=self.interval or "",
            limit=self.limit,
            overlays=self.overlays,
            width=self.width,
            height=self.height,
            style=self.style,
        )
        if self.start is not None:
            getattr(request, "from").CopyFrom(timestamp(self.start))  # `from`: a keyword
        if self.end is not None:
            request.to.CopyFrom(timestamp(self.end))
        return request


def render_job(charts: ChartRenderer) -> JobType:
    """The `chart.render` job type over `charts` (the charts client). I/O-bound here (charts
    draws), so more of them run at once than backtests; a call takes seconds at most."""

    async def run(ctx: JobContext, params: RenderParams) -> dict[str, Any]:
        await ctx.checkpoint()
        answer = await charts.render_chart(params.request())
        return {
            "url": answer.url,
            "expires_at": answer.expires_at.ToDatetime(tzinfo=UTC).isoformat(),
            "key": answer.key,
            "cached": answer.cached,
        }

    return JobType(
        name="chart.render",
        params=RenderParams,
        run=run,
        user_may_submit=True,
        max_attempts=3,
        concurrency=4,
        timeout_s=120.0,
    )
