"""Jobs end to end through the gateway: a backtest on charts' real GOOG history whose
statistics equal running `backtesting` here on the same bars (read through the gateway) with a
strategy written here; its progress and final status over SSE; its equity chart behind a signed
URL; a refusal naming the field; another user's job is not found; the documents' root shapes;
a GDPR export: every service's document in the zip, the link mailed. The API is
docs/jobs-api.md."""

from __future__ import annotations

import asyncio
import io
import json
import math
import secrets
import time
import zipfile
from typing import Any

import httpx
import pandas as pd
from backtesting import Backtest, Strategy
from backtesting.lib import crossover

PASSWORD = "correct horse battery staple"
SMA_CROSS: dict[str, Any] = {"symbol": "GOOG", "strategy": "sma_cross", "fast": 10, "slow": 30}
BACKTEST = {"type": "backtest", "params": SMA_CROSS}
FINAL = ("completed", "failed", "cancelled")


def sma(values: Any, n: int) -> Any:
    return pd.Series(values).rolling(n).mean()


class LongSmaCross(Strategy):  # type: ignore[misc]  # backtesting ships no types
    """Long only: buy when the fast mean crosses above the slow one, close on the way back."""

    fast = 10
    slow = 30

    def init(self) -> None:
        self.sma_fast = self.I(sma, self.data.Close, self.fast)
        self.sma_slow = self.I(sma, self.data.Close, self.slow)

    def next(self) -> None:
        if not self.position and crossover(self.sma_fast, self.sma_slow):
            self.buy()
        elif self.position and crossover(self.sma_slow, self.sma_fast):
            self.position.close()


async def token(api: httpx.AsyncClient) -> dict[str, str]:
    email = f"jobs.{secrets.token_hex(5)}@example.com"
    registered = await api.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {login.json()['tokens']['access_token']}"}


async def daily_bars(api: httpx.AsyncClient, auth: dict[str, str], symbol: str) -> pd.DataFrame:
    """Every daily candle of `symbol`, once charts' loader has committed it."""
    deadline = time.monotonic() + 120
    while (await api.get(f"/api/charts/{symbol}/quote", headers=auth)).status_code != 200:
        assert time.monotonic() < deadline, f"{symbol} never loaded"
        await asyncio.sleep(0.5)
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"interval": "1d", "limit": 10_000}
    while True:
        page = await api.get(f"/api/charts/{symbol}", params=params, headers=auth)
        assert page.status_code == 200, page.text
        timezone = page.json()["timezone"]
        rows += page.json()["candles"]
        if page.json()["next_cursor"] is None:
            break
        params["cursor"] = page.json()["next_cursor"]
    frame = pd.DataFrame(rows)
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("time"))).tz_convert(timezone)
    return frame.rename(columns=str.capitalize)[["Open", "High", "Low", "Close", "Volume"]]


async def watched(
    api: httpx.AsyncClient, auth: dict[str, str], job_id: str
) -> list[dict[str, Any]]:
    """Every `job` event of the job's SSE stream, which ends after its final status."""
    events: list[dict[str, Any]] = []
    async with api.stream("GET", f"/api/jobs/{job_id}/events", headers=auth, timeout=300) as stream:
        assert stream.status_code == 200
        name = ""
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:") and name == "job":
                events.append(json.loads(line.removeprefix("data:")))
    return events


async def test_a_backtest_through_the_gateway_equals_backtesting_on_the_same_bars(
    api: httpx.AsyncClient,
) -> None:
    auth = await token(api)
    bars = await daily_bars(api, auth, "GOOG")
    submitted = await api.post("/api/jobs", json=BACKTEST, headers=auth)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert submitted.headers["location"] == f"/api/jobs/{job_id}"

    events = await watched(api, auth, job_id)
    assert events[-1]["status"] == "completed", events[-1]
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)
    job = (await api.get(f"/api/jobs/{job_id}", headers=auth)).json()
    assert (job["status"], job["progress"], job["attempts"]) == ("completed", 100, 1)

    expected = Backtest(bars, LongSmaCross, cash=10_000, commission=0.0, finalize_trades=True)
    stats = expected.run(fast=10, slow=30)
    got = job["result"]["stats"]
    assert got["bars"] == len(bars)
    assert got["trades"] == stats["# Trades"] > 0
    for name, key in (
        ("return_pct", "Return [%]"),
        ("buy_hold_return_pct", "Buy & Hold Return [%]"),
        ("sharpe", "Sharpe Ratio"),
        ("max_drawdown_pct", "Max. Drawdown [%]"),
        ("win_rate_pct", "Win Rate [%]"),
        ("equity_final", "Equity Final [$]"),
    ):
        assert math.isclose(got[name], stats[key], rel_tol=1e-9), (name, got[name], stats[key])

    (chart,) = job["artifacts"]
    assert chart["name"] == "equity.png"
    async with httpx.AsyncClient(timeout=30) as plain:  # a signed URL: no token
        png = await plain.get(chart["url"])
    assert png.status_code == 200
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")

    other = await token(api)
    assert (await api.get(f"/api/jobs/{job_id}", headers=other)).status_code == 404
    listed = (await api.get("/api/jobs", params={"type": "backtest"}, headers=auth)).json()
    assert [j["id"] for j in listed["jobs"]] == [job_id]
    document = (await api.get(f"/jobs/{job_id}", headers=auth)).json()
    assert (document["job_id"], document["status"]) == (job_id, "completed")


async def test_bad_jobs_are_refused_with_a_message(api: httpx.AsyncClient) -> None:
    auth = await token(api)
    slow_first = {"type": "backtest", "params": SMA_CROSS | {"fast": 40}}
    refused = await api.post("/api/jobs", json=slow_first, headers=auth)
    assert refused.status_code == 400, refused.text
    assert "slow" in refused.json()["detail"]
    operators_only = await api.post("/api/jobs", json={"type": "noop", "params": {}}, headers=auth)
    assert operators_only.status_code == 403, operators_only.text


async def test_a_gdpr_export_zips_every_services_document_and_mails_the_link(
    api: httpx.AsyncClient, server_side: Any, chat_ready: None
) -> None:
    email = f"jobs.{secrets.token_hex(5)}@example.com"
    body = {"email": email, "password": PASSWORD}
    assert (await api.post("/api/auth/register", json=body)).status_code == 201
    login = await api.post("/api/auth/login", json=body)
    auth = {"Authorization": f"Bearer {login.json()['tokens']['access_token']}"}
    room = await api.post(
        "/api/chat/room", json={"name": "export me", "visibility": "private"}, headers=auth
    )
    assert room.status_code == 201, room.text
    submitted = await api.post(
        "/api/jobs", json={"type": "gdpr.export", "params": {}}, headers=auth
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    events = await watched(api, auth, job_id)
    assert events[-1]["status"] == "completed", events[-1]
    job = (await api.get(f"/api/jobs/{job_id}", headers=auth)).json()
    (archive,) = job["artifacts"]
    async with httpx.AsyncClient(timeout=30) as plain:  # a signed URL: no token
        zipped = await plain.get(archive["url"])
    assert zipped.status_code == 200
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as z:
        names = set(z.namelist())
        documents = {n: json.loads(z.read(n)) for n in names}
    assert {f"{s}.json" for s in ("auth", "chat", "ai", "alerts", "memory", "worker")} <= names
    assert "manifest.json" in names
    assert email in json.dumps(documents["auth.json"])
    assert "export me" in json.dumps(documents["chat.json"])
    assert job_id in json.dumps(documents["worker.json"])

    mail = await server_side.mail(email, "Your Aether data export is ready", within=30)
    assert f"/api/jobs/{job_id}" in mail.get_payload()
