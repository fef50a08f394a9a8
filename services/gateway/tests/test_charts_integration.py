"""/api/charts/* against the real charts service (in-process, on this test's PostgreSQL
database and a bucket of its own on the devstack's S3 server): the gateway and charts both
verify the caller's token against the same auth peer's JWKS; bars imported through charts'
ImportBars come back as candles and as a chart image through the gateway."""

from __future__ import annotations

import itertools
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from aether_charts.app import ChartsApp
from aether_charts.config import ChartsSettings
from aether_common.lifecycle import Component
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import unique_name

# Two weeks of a made-up ticker (Mon 2024-01-01 .. Fri 2024-01-12, the 1st a holiday).
BARS = """time,open,high,low,close,volume
2024-01-02,10,11,9,10.5,100
2024-01-03,10.5,12,10,11,200
2024-01-04,11,11.5,10.5,11.2,300
2024-01-05,11.2,13,11,12.8,400
2024-01-08,12.8,13.5,12,13,500
2024-01-09,13,14,12.5,13.9,600
"""


@pytest.fixture
async def charts_service(
    pg_dsn: str,
    fake_auth: Any,
    token_issuer_audience: tuple[str, str],
    aether_endpoints: Endpoints,
) -> AsyncIterator[ChartsApp]:
    issuer, audience = token_issuer_audience
    settings = ChartsSettings.model_validate(
        {
            # dev: the local S3 server's keys are placeholders, which other environments refuse.
            "environment": "dev",
            "s3_endpoint": aether_endpoints.s3_endpoint,
            "s3_access_key": aether_endpoints.s3_access_key,
            "s3_secret_key": aether_endpoints.s3_secret_key,
            "s3_bucket": unique_name("aether-t-charts-"),
            "database_url": pg_dsn,
            "auth_grpc_target": fake_auth.address,
            "jwt_issuer": issuer,
            "jwt_audience": audience,
            "load_bundled": False,
            "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
            "redis_url": aether_endpoints.redis_url,
            "cache_prefix": unique_name("t-charts-cache-") + ":",
        }
    )
    app = ChartsApp(settings, grpc_host="127.0.0.1", grpc_port=0)
    started: list[Component] = []
    try:
        for component in app.components(events=False):
            await component.start()
            started.append(component)
        await app.service.import_file(
            app.database, "ACME.B", BARS.encode(), name="Acme Corp B", timezone="America/New_York"
        )
        yield app
    finally:
        for component in reversed(started):
            await component.stop()


@pytest.fixture
async def api(start_gateway: Any, charts_service: ChartsApp) -> Any:
    return await start_gateway(charts_grpc_target=charts_service.grpc.address)


@pytest.fixture
def caller(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-ada')}"}


async def test_symbols_and_candles_through_the_gateway(api: Any, caller: dict[str, str]) -> None:
    found = await api.get("/api/charts/symbols", params={"q": "acme"}, headers=caller)
    assert found.status_code == 200, found.text
    (acme,) = found.json()["symbols"]
    assert (acme["symbol"], acme["bars"], acme["first_bar"]) == (
        "ACME.B",
        6,
        "2024-01-02T05:00:00.000000Z",
    )

    weekly = await api.get("/api/charts/acme.b", params={"interval": "1w"}, headers=caller)
    assert weekly.status_code == 200, weekly.text
    assert weekly.json()["candles"] == [
        {
            "time": "2024-01-01T05:00:00.000000Z",
            "open": 10.0,
            "high": 13.0,
            "low": 9.0,
            "close": 12.8,
            "volume": 1000.0,
        },
        {
            "time": "2024-01-08T05:00:00.000000Z",
            "open": 12.8,
            "high": 14.0,
            "low": 12.0,
            "close": 13.9,
            "volume": 1100.0,
        },
    ]

    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"interval": "1d", "limit": 4} | (
            {"cursor": cursor} if cursor else {}
        )
        page = (await api.get("/api/charts/ACME.B", params=params, headers=caller)).json()
        pages.append([c["time"][:10] for c in page["candles"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [
        ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"],
        ["2024-01-08", "2024-01-09"],
    ]


async def test_charts_refusals_through_the_gateway(
    api: Any, caller: dict[str, str], error_shape: Any
) -> None:
    detail = error_shape(
        await api.get("/api/charts/ACME.B", params={"interval": "1h"}, headers=caller),
        400,
        "validation",
    )
    assert "1d 1w 1M" in detail
    error_shape(await api.get("/api/charts/NOPE", headers=caller), 404, "not_found")


async def test_indicators_through_the_gateway(
    api: Any, caller: dict[str, str], error_shape: Any
) -> None:
    params = {"symbol": "ACME.B", "indicators": "sma:2,obv", "interval": "1d"}
    answer = await api.get("/api/charts/indicators", params=params, headers=caller)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [t[:10] for t in body["times"]] == [
        "2024-01-02",
        "2024-01-03",
        "2024-01-04",
        "2024-01-05",
        "2024-01-08",
        "2024-01-09",
    ]
    closes = [10.5, 11, 11.2, 12.8, 13, 13.9]
    assert body["indicators"]["sma:2"]["sma"] == pytest.approx(
        [None, *[(a + b) / 2 for a, b in itertools.pairwise(closes)]]
    )
    assert body["indicators"]["obv"]["obv"] == [0, 200, 500, 900, 1400, 2000]
    catalog = await api.get("/api/charts/indicators/catalog", headers=caller)
    assert "macd" in [i["name"] for i in catalog.json()["indicators"]]
    detail = error_shape(
        await api.get(
            "/api/charts/indicators", params=params | {"indicators": "nope"}, headers=caller
        ),
        400,
        "validation",
    )
    assert "nope: unknown indicator" in detail


async def test_quote_through_the_gateway(api: Any, caller: dict[str, str]) -> None:
    answer = await api.get("/api/charts/acme.b/quote", headers=caller)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "symbol": "ACME.B",
        "timezone": "America/New_York",
        "time": "2024-01-09T05:00:00.000000Z",
        "price": 13.9,
        "previous_close": 13.0,
        "change": pytest.approx(0.9),
        "change_percent": pytest.approx(100 * 0.9 / 13),
        "session_start": "2024-01-09T05:00:00.000000Z",
        "day_open": 13.0,
        "day_high": 14.0,
        "day_low": 12.5,
        "day_volume": 600.0,
    }


async def test_latest_candles_through_the_gateway(api: Any, caller: dict[str, str]) -> None:
    params = {"interval": "1d", "limit": 2, "latest": "true"}
    answer = await api.get("/api/charts/ACME.B", params=params, headers=caller)
    assert answer.status_code == 200, answer.text
    assert [c["time"][:10] for c in answer.json()["candles"]] == ["2024-01-08", "2024-01-09"]
    assert answer.json()["next_cursor"] is None
    back = params | {"to": answer.json()["candles"][0]["time"]}
    earlier = await api.get("/api/charts/ACME.B", params=back, headers=caller)
    assert [c["time"][:10] for c in earlier.json()["candles"]] == ["2024-01-04", "2024-01-05"]


async def test_a_chart_image_through_the_gateway(
    api: Any, caller: dict[str, str], error_shape: Any
) -> None:
    body = {"symbol": "acme.b", "overlays": ["sma:2"], "width": 480, "height": 320}
    first = await api.post("/api/charts/generate", json=body, headers=caller)
    assert first.status_code == 200, first.text
    assert first.json()["cached"] is False
    async with httpx.AsyncClient() as http:
        png = (await http.get(first.json()["url"])).content
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (480, 320)
    again = await api.post("/api/charts/generate", json=body, headers=caller)
    assert again.json()["cached"] is True
    detail = error_shape(
        await api.post(
            "/api/charts/generate", json=body | {"overlays": "rsi,macd,atr,cci"}, headers=caller
        ),
        400,
        "validation",
    )
    assert "at most 3 panel indicators" in detail
