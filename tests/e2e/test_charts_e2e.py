"""Charts end to end through the gateway: the bundled history that charts loads at its first start
-> candles at three intervals that agree with each other -> indicators equal to TA-Lib called
here on the same candles -> a chart image whose URL downloads a PNG -> refusals with a message.
The API is docs/charts.md.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import defaultdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import talib
from websockets.asyncio.client import connect

PASSWORD = "correct horse battery staple"
NY = ZoneInfo("America/New_York")
YEAR_2010 = {"from": "2010-01-01T00:00:00-05:00", "to": "2011-01-01T00:00:00-05:00"}


async def token(api: httpx.AsyncClient) -> dict[str, str]:
    email = f"charts.{secrets.token_hex(5)}@example.com"
    registered = await api.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {login.json()['tokens']['access_token']}"}


async def loaded(api: httpx.AsyncClient, auth: dict[str, str], symbol: str) -> dict[str, Any]:
    """The instrument once charts' background loader has committed its dataset."""
    deadline = time.monotonic() + 120
    while True:
        found = await api.get("/api/charts/symbols", params={"q": symbol}, headers=auth)
        assert found.status_code == 200, found.text
        exact = [s for s in found.json()["symbols"] if s["symbol"] == symbol]
        if exact and exact[0]["bars"]:
            instrument: dict[str, Any] = exact[0]
            return instrument
        assert time.monotonic() < deadline, f"{symbol} never loaded"
        await asyncio.sleep(0.5)


async def candles(
    api: httpx.AsyncClient, auth: dict[str, str], interval: str, **window: str
) -> list[dict[str, Any]]:
    """Every page."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"interval": interval, "limit": 1000, **window}
    while True:
        page = await api.get("/api/charts/AAPL", params=params, headers=auth)
        assert page.status_code == 200, page.text
        out += page.json()["candles"]
        if page.json()["next_cursor"] is None:
            return out
        params["cursor"] = page.json()["next_cursor"]


def local(candle: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(candle["time"]).astimezone(NY)


def rolled_up(daily: list[dict[str, Any]], key: Any) -> list[tuple[float, ...]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for candle in daily:
        groups[key(local(candle))].append(candle)
    return [
        (
            g[0]["open"],
            max(c["high"] for c in g),
            min(c["low"] for c in g),
            g[-1]["close"],
            sum(c["volume"] for c in g),
        )
        for _, g in sorted(groups.items())
    ]


def ohlcv(candles: list[dict[str, Any]]) -> list[tuple[float, ...]]:
    return [(c["open"], c["high"], c["low"], c["close"], c["volume"]) for c in candles]


async def test_history_candles_and_indicators_through_the_gateway(api: httpx.AsyncClient) -> None:
    auth = await token(api)
    aapl = await loaded(api, auth, "AAPL")
    assert (aapl["resolution"], aapl["timezone"]) == ("1d", "America/New_York")

    daily = await candles(api, auth, "1d", **YEAR_2010)
    weekly = await candles(api, auth, "1w", **YEAR_2010)
    monthly = await candles(api, auth, "1M", **YEAR_2010)
    assert len(daily) == 252
    assert all(local(c).hour == 0 for c in daily + weekly + monthly)  # New York midnight
    # 2010 starts on a Friday: its first week began on Monday 2009-12-28, before the window.
    in_weeks = [c for c in daily if local(c) >= local(weekly[0])]
    weeks = rolled_up(in_weeks, lambda t: t.isocalendar()[:2])
    np.testing.assert_allclose(ohlcv(weekly), weeks[: len(weekly)])
    np.testing.assert_allclose(ohlcv(monthly), rolled_up(daily, lambda t: (t.year, t.month)))
    assert len(monthly) == 12

    wanted = "sma:20,rsi:14,macd:12:26:9,bbands:20:2"
    params = {"symbol": "AAPL", "interval": "1d", "indicators": wanted, "limit": "1000"}
    answer = await api.get("/api/charts/indicators", params=params | YEAR_2010, headers=auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["times"] == [c["time"] for c in daily]
    history = await candles(api, auth, "1d", to=YEAR_2010["to"])
    close = np.array([c["close"] for c in history])
    window = slice(len(history) - len(daily), None)
    macd, signal, hist = talib.MACD(close, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(close, 20, 2, 2)
    expected = {
        "sma:20": {"sma": talib.SMA(close, 20)},
        "rsi:14": {"rsi": talib.RSI(close, 14)},
        "macd:12:26:9": {"macd": macd, "signal": signal, "histogram": hist},
        "bbands:20:2": {"upper": upper, "middle": middle, "lower": lower},
    }
    for name, outputs in expected.items():
        for output, values in outputs.items():
            np.testing.assert_allclose(
                body["indicators"][name][output], values[window], rtol=1e-6, err_msg=name
            )


async def test_a_chart_image_downloads_as_a_png(api: httpx.AsyncClient) -> None:
    auth = await token(api)
    await loaded(api, auth, "AAPL")
    body: dict[str, Any] = {"symbol": "AAPL", "interval": "1w", "overlays": "sma:20,bbands:20:2"}
    body |= YEAR_2010 | {"width": 900, "height": 600}
    made = await api.post("/api/charts/generate", json=body, headers=auth)
    assert made.status_code == 200, made.text
    async with httpx.AsyncClient() as anyone:  # the URL needs no token
        png = await anyone.get(made.json()["url"])
    assert png.status_code == 200
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png.content[16:20]) == 900
    assert int.from_bytes(png.content[20:24]) == 600
    again = await api.post("/api/charts/generate", json=body, headers=auth)
    assert again.json()["cached"] is True


async def test_charts_refusals_through_the_gateway(api: httpx.AsyncClient) -> None:
    auth = await token(api)
    await loaded(api, auth, "AAPL")
    for path, params, status, words in [
        ("/api/charts/AAPL", {"interval": "1h"}, 400, "finer"),
        ("/api/charts/NOPE", {}, 404, "NOPE"),
        ("/api/charts/indicators", {"symbol": "AAPL", "indicators": "sma:20,foo"}, 400, "foo"),
        (
            "/api/charts/AAPL",
            {"from": "2011-01-01T00:00:00Z", "to": "2010-01-01T00:00:00Z"},
            400,
            "from",
        ),
    ]:
        refused = await api.get(path, params=params, headers=auth)
        assert refused.status_code == status, refused.text
        assert words in refused.json()["detail"]
    assert (await api.get("/api/charts/AAPL")).status_code == 401


async def test_ai_analyzes_a_symbol_on_charts_data(api: httpx.AsyncClient) -> None:
    """AI on real prices: no bars sent, ai reads AAPL's candles and indicators from charts."""
    auth = await token(api)
    await loaded(api, auth, "AAPL")
    answer = await api.post(
        "/api/ai/analyze",
        json={"symbol": "aapl", "question": "Is the trend up?"},
        headers=auth,
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["answer"]
    unknown = await api.post("/api/ai/analyze", json={"symbol": "NOPE"}, headers=auth, timeout=60)
    assert unknown.status_code == 404, unknown.text


async def test_a_live_subscriber_sees_replayed_ticks_and_a_bar_close(
    api: httpx.AsyncClient, gateway_url: str
) -> None:
    """`make dev` (and this platform) replays bundled history: ticks and closed bars reach a
    `WS /api/market/stream` subscriber through charts' feed consumer, Redis and the gateway."""
    auth = await token(api)
    await loaded(api, auth, "AAPL")
    url = gateway_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    async with connect(url + "/api/market/stream", additional_headers=auth) as ws:
        ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ready["type"] == "ready", ready
        await ws.send(json.dumps({"type": "subscribe", "symbols": ["aapl"], "intervals": ["1d"]}))
        seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
        deadline = time.monotonic() + 60
        while not seen["bar"] or not seen["tick"]:
            left = deadline - time.monotonic()
            assert left > 0, f"no replayed tick and bar within 60 s: {dict(seen)}"
            frame = json.loads(await asyncio.wait_for(ws.recv(), left))
            if frame["type"] == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            seen[frame["type"]].append(frame)
    assert seen["subscribed"][0]["subscriptions"] == {"AAPL": ["1d"]}
    tick, bar = seen["tick"][0], seen["bar"][0]
    assert (tick["symbol"], tick["derived"], tick["replay"]["pass"] >= 1) == ("AAPL", True, True)
    assert (bar["symbol"], bar["interval"], bar["closed"]) == ("AAPL", "1d", True)
    assert bar["id"].startswith(f"replay:{bar['replay']['pass']}:AAPL:1d:")
    # The closed bar is the stored daily candle of that day.
    day = await api.get(
        "/api/charts/AAPL",
        params={"interval": "1d", "from": bar["time"], "limit": 1},
        headers=auth,
    )
    assert day.status_code == 200, day.text
    stored = day.json()["candles"][0]
    assert {k: stored[k] for k in ("open", "high", "low", "close", "volume")} == {
        k: bar[k] for k in ("open", "high", "low", "close", "volume")
    }
