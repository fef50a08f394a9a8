"""/api/charts/*: each route calls its ChartsService RPC with the caller's token and shapes the
answer; bad input is a 400 before any gRPC call; charts' errors keep their meaning. charts is a
scripted gRPC peer here (fake_charts in conftest.py); services/charts/tests test the service."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from aether.charts.v1 import charts_pb2
from aether_common import errors


def ts(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


@pytest.fixture
async def api(start_gateway: Any, fake_charts: Any) -> Any:
    return await start_gateway(charts_grpc_target=fake_charts.address)


@pytest.fixture
def caller(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-ada')}"}


async def test_candles_forward_the_window_and_shape_the_answer(
    api: Any, fake_charts: Any, caller: dict[str, str]
) -> None:
    fake_charts.answers["GetCandles"] = charts_pb2.GetCandlesResponse(
        symbol="BRK.B",
        interval="1w",
        timezone="America/New_York",
        candles=[
            charts_pb2.Candle(
                time=ts(datetime(2010, 3, 1, 5, tzinfo=UTC)),
                open=70.5,
                high=72.0,
                low=69.25,
                close=71.0,
                volume=12345,
            )
        ],
        next_cursor="next-page",
    )
    response = await api.get(
        "/api/charts/brk.b",
        params={
            "interval": "1w",
            "from": "2010-01-01T00:00:00Z",
            "to": "2011-01-01T00:00:00+00:00",
            "limit": 10,
            "cursor": "this-page",
        },
        headers=caller,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "symbol": "BRK.B",
        "interval": "1w",
        "timezone": "America/New_York",
        "candles": [
            {
                "time": "2010-03-01T05:00:00.000000Z",
                "open": 70.5,
                "high": 72.0,
                "low": 69.25,
                "close": 71.0,
                "volume": 12345.0,
            }
        ],
        "next_cursor": "next-page",
    }
    (call,) = fake_charts.calls_to("GetCandles")
    request = call.request
    assert (request.symbol, request.interval, request.limit, request.cursor) == (
        "brk.b",
        "1w",
        10,
        "this-page",
    )
    assert getattr(request, "from").ToDatetime() == datetime(2010, 1, 1)
    assert request.to.ToDatetime() == datetime(2011, 1, 1)
    assert call.metadata["authorization"] == caller["Authorization"]
    assert response.headers["cache-control"] == "no-store"


async def test_candles_defaults(api: Any, fake_charts: Any, caller: dict[str, str]) -> None:
    fake_charts.answers["GetCandles"] = charts_pb2.GetCandlesResponse(
        symbol="AAPL", interval="1d", timezone="America/New_York"
    )
    response = await api.get("/api/charts/AAPL", headers=caller)
    assert response.json()["next_cursor"] is None
    assert response.json()["candles"] == []
    request = fake_charts.calls_to("GetCandles")[0].request
    assert (request.interval, request.limit, request.cursor) == ("", 500, "")
    assert not request.HasField("from")
    assert not request.HasField("to")


async def test_symbols_is_not_taken_for_a_ticker(
    api: Any, fake_charts: Any, caller: dict[str, str]
) -> None:
    fake_charts.answers["ListSymbols"] = charts_pb2.ListSymbolsResponse(
        instruments=[
            charts_pb2.Instrument(
                symbol="AAPL",
                name="Apple Inc.",
                timezone="America/New_York",
                resolution="1d",
                source="bokeh-sampledata",
                first_bar=ts(datetime(2000, 3, 1, 5, tzinfo=UTC)),
                last_bar=ts(datetime(2013, 3, 1, 5, tzinfo=UTC)),
                bars=3270,
            ),
            charts_pb2.Instrument(symbol="NEW", resolution="1d", timezone="UTC", source="import"),
        ]
    )
    response = await api.get("/api/charts/symbols", params={"q": " apple "}, headers=caller)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "symbols": [
            {
                "symbol": "AAPL",
                "name": "Apple Inc.",
                "timezone": "America/New_York",
                "resolution": "1d",
                "source": "bokeh-sampledata",
                "first_bar": "2000-03-01T05:00:00.000000Z",
                "last_bar": "2013-03-01T05:00:00.000000Z",
                "bars": 3270,
            },
            {
                "symbol": "NEW",
                "name": "",
                "timezone": "UTC",
                "resolution": "1d",
                "source": "import",
                "first_bar": None,
                "last_bar": None,
                "bars": 0,
            },
        ]
    }
    (call,) = fake_charts.calls_to("ListSymbols")
    assert (call.request.q, call.request.limit) == ("apple", 50)
    assert not fake_charts.calls_to("GetCandles")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/charts/AAPL", {"interval": "2d"}),
        ("/api/charts/AAPL", {"limit": 0}),
        ("/api/charts/AAPL", {"limit": 10_001}),
        ("/api/charts/AAPL", {"from": "2010-01-01"}),  # no time zone
        ("/api/charts/AAPL", {"from": "2011-01-01T00:00:00Z", "to": "2010-01-01T00:00:00Z"}),
        ("/api/charts/bad%20symbol!", {}),
        ("/api/charts/symbols", {"limit": 0}),
        ("/api/charts/symbols", {"q": "x" * 101}),
    ],
)
async def test_bad_input_is_a_400_before_any_call(
    api: Any,
    fake_charts: Any,
    caller: dict[str, str],
    error_shape: Any,
    path: str,
    params: dict[str, Any],
) -> None:
    error_shape(await api.get(path, params=params, headers=caller), 400, "validation")
    assert not fake_charts.calls


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.NotFound("unknown symbol 'NOPE'"), 404, "not_found"),
        (
            errors.ValidationFailed("interval '1h' is finer than AAPL's stored 1d bars"),
            400,
            "validation",
        ),
        (errors.Unavailable("charts' database is away", retry_after=2), 503, "unavailable"),
    ],
)
async def test_charts_errors_keep_their_meaning(
    api: Any,
    fake_charts: Any,
    caller: dict[str, str],
    error_shape: Any,
    error: errors.AetherError,
    status: int,
    code: str,
) -> None:
    fake_charts.answers["GetCandles"] = error
    detail = error_shape(await api.get("/api/charts/AAPL", headers=caller), status, code)
    assert detail == error.detail


async def test_charts_routes_need_a_caller(api: Any, fake_charts: Any, error_shape: Any) -> None:
    error_shape(await api.get("/api/charts/AAPL"), 401)
    error_shape(await api.get("/api/charts/symbols"), 401)
    assert not fake_charts.calls


async def test_without_charts_configured_routes_answer_503(
    start_gateway: Any, caller: dict[str, str], error_shape: Any
) -> None:
    api = await start_gateway()
    error_shape(await api.get("/api/charts/AAPL", headers=caller), 503, "charts_not_configured")
    assert "charts" not in (await api.get("/api/status")).json()["dependencies"]


async def test_status_reports_charts_health(start_gateway: Any, fake_charts: Any) -> None:
    up = await start_gateway(charts_grpc_target=fake_charts.address)
    assert (await up.get("/api/status")).json()["dependencies"]["charts"]["ok"] is True


async def test_indicators_forward_the_request_and_null_what_is_undefined(
    api: Any, fake_charts: Any, caller: dict[str, str]
) -> None:
    times = [ts(datetime(2024, 1, day, 5, tzinfo=UTC)) for day in (2, 3)]
    fake_charts.answers["GetIndicators"] = charts_pb2.GetIndicatorsResponse(
        symbol="AAPL",
        interval="1d",
        timezone="America/New_York",
        times=times,
        series=[
            charts_pb2.IndicatorSeries(indicator="sma:2", output="sma", values=[float("nan"), 1.5]),
            charts_pb2.IndicatorSeries(indicator="macd:12:26:9", output="signal", values=[1, 2]),
            charts_pb2.IndicatorSeries(indicator="macd:12:26:9", output="macd", values=[3, 4]),
        ],
    )
    response = await api.get(
        "/api/charts/indicators",
        params={"symbol": "aapl", "indicators": "sma:2,macd", "interval": "1d", "limit": 2},
        headers=caller,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "symbol": "AAPL",
        "interval": "1d",
        "timezone": "America/New_York",
        "times": ["2024-01-02T05:00:00.000000Z", "2024-01-03T05:00:00.000000Z"],
        "indicators": {
            "sma:2": {"sma": [None, 1.5]},
            "macd:12:26:9": {"signal": [1.0, 2.0], "macd": [3.0, 4.0]},
        },
        "next_cursor": None,
    }
    (call,) = fake_charts.calls_to("GetIndicators")
    assert (call.request.symbol, call.request.indicators, call.request.limit) == (
        "aapl",
        "sma:2,macd",
        2,
    )
    assert not fake_charts.calls_to("GetCandles")  # "indicators" is not taken for a ticker


async def test_the_indicator_catalog(api: Any, fake_charts: Any, caller: dict[str, str]) -> None:
    fake_charts.answers["ListIndicators"] = charts_pb2.ListIndicatorsResponse(
        indicators=[
            charts_pb2.IndicatorInfo(
                name="sma",
                title="Simple moving average",
                params=[
                    charts_pb2.IndicatorParam(
                        name="timeperiod", default=20, min=1, max=1000, integer=True
                    )
                ],
                outputs=["sma"],
                placement="overlay",
            )
        ]
    )
    response = await api.get("/api/charts/indicators/catalog", headers=caller)
    assert response.status_code == 200, response.text
    assert response.json()["indicators"] == [
        {
            "name": "sma",
            "title": "Simple moving average",
            "params": [
                {"name": "timeperiod", "default": 20.0, "min": 1.0, "max": 1000.0, "integer": True}
            ],
            "outputs": ["sma"],
            "placement": "overlay",
        }
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"indicators": "sma:20"},  # no symbol
        {"symbol": "AAPL"},  # no indicators
        {"symbol": "AAPL", "indicators": ""},
        {"symbol": "bad symbol!", "indicators": "sma"},
        {"symbol": "AAPL", "indicators": "sma", "interval": "2d"},
        {
            "symbol": "AAPL",
            "indicators": "sma",
            "from": "2011-01-01T00:00:00Z",
            "to": "2010-01-01T00:00:00Z",
        },
    ],
)
async def test_bad_indicator_requests_are_a_400_before_any_call(
    api: Any, fake_charts: Any, caller: dict[str, str], params: dict[str, str]
) -> None:
    response = await api.get("/api/charts/indicators", params=params, headers=caller)
    assert response.status_code == 400, response.text
    assert not fake_charts.calls_to("GetIndicators")


async def test_generate_forwards_the_chart_and_answers_the_url(
    api: Any, fake_charts: Any, caller: dict[str, str]
) -> None:
    fake_charts.answers["RenderChart"] = charts_pb2.RenderChartResponse(
        url="http://s3.example/aether-charts/charts/v1/AAPL/1d/abc.png?Signature=x",
        expires_at=ts(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        cached=True,
        key="charts/v1/AAPL/1d/abc.png",
    )
    response = await api.post(
        "/api/charts/generate",
        json={
            "symbol": "aapl",
            "interval": "1w",
            "from": "2010-01-01T00:00:00Z",
            "to": "2011-01-01T00:00:00+00:00",
            "limit": 100,
            "overlays": ["sma:20", "bbands:20:2"],
            "width": 640,
            "height": 480,
            "style": "charles",
        },
        headers=caller,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "url": "http://s3.example/aether-charts/charts/v1/AAPL/1d/abc.png?Signature=x",
        "expires_at": "2026-01-02T03:04:05.000000Z",
        "cached": True,
    }
    (call,) = fake_charts.calls_to("RenderChart")
    request = call.request
    assert (request.symbol, request.interval, request.limit, request.overlays) == (
        "aapl",
        "1w",
        100,
        "sma:20,bbands:20:2",
    )
    assert (request.width, request.height, request.style) == (640, 480, "charles")
    assert getattr(request, "from").ToDatetime() == datetime(2010, 1, 1)
    assert request.to.ToDatetime() == datetime(2011, 1, 1)
    assert call.metadata["authorization"] == caller["Authorization"]


async def test_generate_defaults_are_left_to_charts(
    api: Any, fake_charts: Any, caller: dict[str, str]
) -> None:
    fake_charts.answers["RenderChart"] = charts_pb2.RenderChartResponse(
        url="http://s3.example/x.png", expires_at=ts(datetime(2026, 1, 1, tzinfo=UTC))
    )
    response = await api.post(
        "/api/charts/generate", json={"symbol": "EURUSD", "overlays": "ema:50"}, headers=caller
    )
    assert response.status_code == 200, response.text
    assert response.json()["cached"] is False
    request = fake_charts.calls_to("RenderChart")[0].request
    assert (request.interval, request.limit, request.width, request.height, request.style) == (
        "",
        0,
        0,
        0,
        "",
    )
    assert request.overlays == "ema:50"
    assert not request.HasField("from")
    assert not request.HasField("to")


@pytest.mark.parametrize(
    "body",
    [
        {},  # no symbol
        {"symbol": "bad symbol!"},
        {"symbol": "AAPL", "interval": "2d"},
        {"symbol": "AAPL", "limit": 0},
        {"symbol": "AAPL", "width": 10},
        {"symbol": "AAPL", "height": 100_000},
        {"symbol": "AAPL", "width": "640"},  # no coercion
        {"symbol": "AAPL", "from": "2010-01-01"},  # no time zone
        {"symbol": "AAPL", "from": 1262304000},  # RFC 3339 only
        {"symbol": "AAPL", "from": "2011-01-01T00:00:00Z", "to": "2010-01-01T00:00:00Z"},
        {"symbol": "AAPL", "overlays": ["sma"] * 6},
        {"symbol": "AAPL", "overlays": "x" * 301},
        {"symbol": "AAPL", "style": "Comic Sans!"},
        {"symbol": "AAPL", "unknown": 1},
    ],
)
async def test_bad_generate_bodies_are_a_400_before_any_call(
    api: Any, fake_charts: Any, caller: dict[str, str], error_shape: Any, body: dict[str, Any]
) -> None:
    response = await api.post("/api/charts/generate", json=body, headers=caller)
    error_shape(response, 400, "validation")
    assert not fake_charts.calls


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.NotFound("unknown symbol 'NOPE'"), 404, "not_found"),
        (
            errors.ValidationFailed(
                "rsi:14: not drawn on the price", field_errors={"overlays": "rsi:14"}
            ),
            400,
            "validation",
        ),
        (errors.Unavailable("charts' store is away", retry_after=2), 503, "unavailable"),
    ],
)
async def test_generate_errors_keep_their_meaning(
    api: Any,
    fake_charts: Any,
    caller: dict[str, str],
    error_shape: Any,
    error: errors.AetherError,
    status: int,
    code: str,
) -> None:
    fake_charts.answers["RenderChart"] = error
    response = await api.post("/api/charts/generate", json={"symbol": "AAPL"}, headers=caller)
    assert error_shape(response, status, code) == error.detail


async def test_generate_needs_a_caller(api: Any, fake_charts: Any, error_shape: Any) -> None:
    error_shape(await api.post("/api/charts/generate", json={"symbol": "AAPL"}), 401)
    assert not fake_charts.calls
