"""RenderChart against real PostgreSQL and the devstack's S3 server (moto_server natively): the
presigned URL downloads a PNG of the asked size; the same request over the same data is the
stored object (not drawn again); panel indicators below the price; other overlays, windows,
sizes or data are other objects; the URL is signed for the configured expiry (and refused after
it where the store checks that: MinIO does, moto_server does not); the refusals."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import mplfinance as mpf
import pytest
from google.protobuf import timestamp_pb2
from prometheus_client import REGISTRY

from aether.charts.v1 import charts_pb2
from aether_charts.render import STYLES
from aether_devstack.pytest_plugin import backend_name
from aether_devstack.testkit import failure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def bars_csv(days: int = 60, *, bump: float = 0.0) -> str:
    """`days` weekday bars of a made-up ticker from 2024-01-01; `bump` moves the last close."""
    rows = ["time,open,high,low,close,volume"]
    day, n = date(2024, 1, 1), 0
    while n < days:
        if day.weekday() < 5:
            price = 100 + 5 * ((n % 7) - 3) + n * 0.3
            close = price + 1 + (bump if n == days - 1 else 0)
            rows.append(f"{day},{price},{price + 3},{price - 2},{close},{1000 + 10 * n}")
            n += 1
        day += timedelta(days=1)
    return "\n".join(rows) + "\n"


async def render(
    charts: Any, symbol: str = "ACME", **fields: Any
) -> charts_pb2.RenderChartResponse:
    answer: charts_pb2.RenderChartResponse = await charts.stub.RenderChart(
        charts_pb2.RenderChartRequest(symbol=symbol, **fields), metadata=charts.auth("reader")
    )
    return answer


def since(start: datetime) -> dict[str, Any]:
    return {"from": ts(start)}  # `from` is a Python keyword


def signed_until(url: str) -> datetime:
    """When a SigV4 presigned URL's signature ends (X-Amz-Date + X-Amz-Expires)."""
    signed = parse_qs(urlsplit(url).query)
    assert signed["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    at = datetime.strptime(signed["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return at + timedelta(seconds=int(signed["X-Amz-Expires"][0]))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
async def acme(charts: Any) -> Any:
    await charts.import_bars("ACME", bars_csv(), name="Acme", timezone="America/New_York")
    return charts


async def test_the_url_downloads_a_png_of_the_asked_size(acme: Any) -> None:
    before = datetime.now(UTC)
    chart = await render(acme, overlays="sma:5,bbands:10:2,vwap", width=640, height=480)
    assert not chart.cached
    assert chart.key.startswith("charts/v1/ACME/1d/")
    assert chart.key.endswith(".png")
    expires = chart.expires_at.ToDatetime(tzinfo=UTC)
    assert before + timedelta(seconds=899) <= expires <= datetime.now(UTC) + timedelta(seconds=901)
    async with httpx.AsyncClient() as http:
        got = await http.get(chart.url)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "image/png"
    assert png_size(got.content) == (640, 480)
    assert acme.app.renderer.drawn == 1


def images(outcome: str) -> float:
    return REGISTRY.get_sample_value("aether_charts_images_total", {"outcome": outcome}) or 0.0


async def test_the_same_request_over_the_same_data_is_not_drawn_again(acme: Any) -> None:
    fields: dict[str, Any] = {"overlays": "ema:10", "interval": "1w", "width": 800, "height": 600}
    drawn, cached = (images("drawn"), images("cached"))
    first = await render(acme, **fields)
    again = await render(acme, "acme", **fields)  # the symbol's case does not matter
    assert (first.cached, again.cached) == (False, True)
    assert again.key == first.key
    assert acme.app.renderer.drawn == 1
    assert (images("drawn"), images("cached")) == (drawn + 1, cached + 1)
    async with httpx.AsyncClient() as http:
        got = await http.get(again.url)
    assert png_size(got.content) == (800, 600)


async def test_other_overlays_windows_sizes_or_data_are_other_images(acme: Any) -> None:
    base = await render(acme, overlays="sma:5")
    variants = [
        await render(acme, overlays="sma:6"),
        await render(acme, overlays="sma:5,ema:5"),
        await render(acme),
        await render(acme, overlays="sma:5", limit=20),
        await render(acme, overlays="sma:5", **since(datetime(2024, 2, 1, tzinfo=UTC))),
        await render(acme, overlays="sma:5", width=1000),
        await render(acme, overlays="sma:5", style="charles"),
    ]
    keys = {base.key, *(v.key for v in variants)}
    assert len(keys) == 1 + len(variants)
    assert not any(v.cached for v in variants)
    # A replaced bar in the window: the same parameters draw a new image.
    await acme.import_bars("ACME", bars_csv(bump=2.5))
    changed = await render(acme, overlays="sma:5")
    assert not changed.cached
    assert changed.key != base.key
    assert acme.app.renderer.drawn == 2 + len(variants)


async def test_charts_drawn_at_once_are_each_their_own_and_reads_go_on_meanwhile(
    start_charts: Any,
) -> None:
    """Drawing runs in worker processes: two at once give two right images, and a candles read
    is answered while they draw (the event loop is not the one drawing)."""
    charts = await start_charts(render_workers=2)
    await charts.import_bars("ACME", bars_csv())
    sizes = [(400, 300), (500, 350), (600, 400)]
    drawing = [
        asyncio.ensure_future(render(charts, width=w, height=h, overlays="sma:5")) for w, h in sizes
    ]
    page = await charts.candles("ACME", limit=5)
    assert len(page.candles) == 5
    assert not all(d.done() for d in drawing)  # the read did not wait for the drawing
    charts_made = await asyncio.gather(*drawing)
    async with httpx.AsyncClient() as http:
        for chart, size in zip(charts_made, sizes, strict=True):
            assert png_size((await http.get(chart.url)).content) == size
    assert charts.app.renderer.drawn == 3


async def test_the_url_expires_after_the_setting(start_charts: Any) -> None:
    """The URL is signed for CHARTS_RENDER_URL_EXPIRY_S and `expires_at` says when it ends.
    MinIO (AETHER_TEST_BACKEND=containers) then refuses it; moto_server (native) does not check
    presigned expiry at all, so there only the signature's own expiry is checked."""
    charts = await start_charts(render_url_expiry_s=1)
    await charts.import_bars("ACME", bars_csv(30))
    chart = await render(charts, width=300, height=200)
    ends = chart.expires_at.ToDatetime(tzinfo=UTC)
    assert abs(signed_until(chart.url) - ends) < timedelta(seconds=1.5)
    if backend_name() != "native":
        await asyncio.sleep(2.5)
        async with httpx.AsyncClient() as http:
            got = await http.get(chart.url)
        assert got.status_code == 403, got.text
    # Asking again signs a new URL for the stored image.
    again = await render(charts, width=300, height=200)
    assert again.cached
    async with httpx.AsyncClient() as http:
        assert (await http.get(again.url)).status_code == 200


@pytest.mark.parametrize(
    ("symbol", "fields", "code", "field"),
    [
        ("ACME", {"overlays": "rsi,macd,atr,stoch"}, grpc.StatusCode.INVALID_ARGUMENT, "overlays"),
        ("ACME", {"overlays": "nope:3"}, grpc.StatusCode.INVALID_ARGUMENT, "overlays"),
        ("ACME", {"overlays": "sma:0"}, grpc.StatusCode.INVALID_ARGUMENT, "overlays"),
        (
            "ACME",
            {"overlays": "sma:2,sma:3,sma:4,sma:5,sma:6,sma:7"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "overlays",
        ),
        ("ACME", {"width": 10}, grpc.StatusCode.INVALID_ARGUMENT, "width"),
        ("ACME", {"height": 99_999}, grpc.StatusCode.INVALID_ARGUMENT, "height"),
        ("ACME", {"width": -1}, grpc.StatusCode.INVALID_ARGUMENT, "width"),
        ("ACME", {"style": "comic"}, grpc.StatusCode.INVALID_ARGUMENT, "style"),
        ("ACME", {"limit": 2001}, grpc.StatusCode.INVALID_ARGUMENT, "limit"),
        ("ACME", {"interval": "1h"}, grpc.StatusCode.INVALID_ARGUMENT, "interval"),
        (
            "ACME",
            {"from": ts(datetime(2030, 1, 1, tzinfo=UTC))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "from",
        ),
        ("NOPE", {}, grpc.StatusCode.NOT_FOUND, "symbol"),
        ("bad symbol!", {}, grpc.StatusCode.INVALID_ARGUMENT, "symbol"),
    ],
)
async def test_refusals(
    acme: Any, symbol: str, fields: dict[str, Any], code: grpc.StatusCode, field: str
) -> None:
    error = await failure(render(acme, symbol, **fields))
    assert error.grpc_code == code
    assert field in error.field_errors
    assert error.detail
    assert acme.app.renderer.drawn == 0


async def test_panel_indicators_are_drawn_below_and_at_most_three(acme: Any) -> None:
    with_panels = await render(acme, overlays="sma:5,rsi:14,macd", width=700, height=900)
    price_only = await render(acme, overlays="sma:5", width=700, height=900)
    assert with_panels.key != price_only.key
    async with httpx.AsyncClient() as http:
        got = await http.get(with_panels.url)
    assert png_size(got.content) == (700, 900)
    # The same indicators in another order are another picture (panels follow the request).
    reordered = await render(acme, overlays="sma:5,macd,rsi:14", width=700, height=900)
    assert reordered.key != with_panels.key
    error = await failure(render(acme, overlays="rsi,macd:5:10:3,atr,cci"))
    assert "at most 3 panel indicators" in error.detail


async def test_a_call_without_a_token_is_refused(acme: Any) -> None:
    error = await failure(acme.stub.RenderChart(charts_pb2.RenderChartRequest(symbol="ACME")))
    assert error.grpc_code == grpc.StatusCode.UNAUTHENTICATED


def test_the_offered_styles_are_mplfinance_styles() -> None:
    assert set(STYLES) <= set(mpf.available_styles())
