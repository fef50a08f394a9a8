"""Alerts end to end through the gateway: a rule on a symbol charts knows -> listed, paused,
resumed -> a test firing lands in the inbox once -> read -> refusals with a message (an unknown
symbol, an impossible threshold, another user's rule). The API is docs/alerts.md."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx

PASSWORD = "correct horse battery staple"
RULE = {
    "symbol": "AAPL",
    "condition": "price_above",
    "value": 190,
    "frequency": "once",
    "channels": ["in_app"],
}


async def token(api: httpx.AsyncClient) -> dict[str, str]:
    email = f"alerts.{secrets.token_hex(5)}@example.com"
    registered = await api.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {login.json()['tokens']['access_token']}"}


async def charts_knows(api: httpx.AsyncClient, auth: dict[str, str], symbol: str) -> None:
    """Once charts' background loader has committed the symbol's dataset (alerts asks charts)."""
    deadline = time.monotonic() + 120
    while True:
        quote = await api.get(f"/api/charts/{symbol}/quote", headers=auth)
        if quote.status_code == 200:
            return
        assert time.monotonic() < deadline, f"{symbol} never loaded: {quote.text}"
        await asyncio.sleep(0.5)


async def test_a_rule_and_its_test_firing_reach_the_inbox(api: httpx.AsyncClient) -> None:
    auth = await token(api)
    await charts_knows(api, auth, "AAPL")
    created = await api.post("/api/alerts", json=RULE, headers=auth)
    assert created.status_code == 201, created.text
    rule = created.json()
    listed = (await api.get("/api/alerts", headers=auth)).json()
    assert [r["id"] for r in listed["rules"]] == [rule["id"]]

    paused = await api.post(f"/api/alerts/{rule['id']}/pause", headers=auth)
    assert paused.json()["status"] == "paused"
    resumed = await api.post(f"/api/alerts/{rule['id']}/resume", headers=auth)
    assert resumed.json()["status"] == "active"

    fired = await api.post(f"/api/alerts/{rule['id']}/test", headers=auth)
    assert fired.status_code == 201, fired.text
    assert (await api.get("/api/notifications/unread-count", headers=auth)).json() == {"unread": 1}
    (note,) = (await api.get("/api/notifications", headers=auth)).json()["notifications"]
    assert note["firing_id"] == fired.json()["id"]
    read = await api.post(f"/api/notifications/{note['id']}/read", headers=auth)
    assert read.json()["read_at"] is not None
    assert (await api.get("/api/notifications/unread-count", headers=auth)).json() == {"unread": 0}

    other = await token(api)
    assert (await api.get(f"/api/alerts/{rule['id']}", headers=other)).status_code == 404
    assert (await api.delete(f"/api/alerts/{rule['id']}", headers=auth)).status_code == 204


async def test_bad_rules_are_refused_with_a_message(api: httpx.AsyncClient) -> None:
    auth = await token(api)
    await charts_knows(api, auth, "AAPL")
    unknown = await api.post("/api/alerts", json=RULE | {"symbol": "NOSUCH"}, headers=auth)
    assert unknown.status_code == 400, unknown.text
    assert unknown.json()["error"] == "unknown_symbol"
    impossible = await api.post("/api/alerts", json=RULE | {"value": 0}, headers=auth)
    assert impossible.status_code == 400, impossible.text
    assert "value" in impossible.json()["detail"]
    no_interval = await api.post(
        "/api/alerts", json=RULE | {"condition": "rsi_above", "value": 70}, headers=auth
    )
    assert no_interval.status_code == 400, no_interval.text
    assert "interval" in no_interval.json()["detail"]


async def test_the_replayed_feed_fires_a_rule_into_the_inbox_once(api: httpx.AsyncClient) -> None:
    """`make dev` (and this platform) replays bundled history: a rule the next AAPL price meets
    fires through the engine into the inbox, once."""
    auth = await token(api)
    await charts_knows(api, auth, "AAPL")
    rule = {**RULE, "value": 0.01}  # any price is above it: the next replayed tick fires it
    created = await api.post("/api/alerts", json=rule, headers=auth)
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]
    deadline = time.monotonic() + 60
    while True:
        inbox = await api.get("/api/notifications", headers=auth)
        assert inbox.status_code == 200, inbox.text
        if inbox.json()["notifications"]:
            break
        assert time.monotonic() < deadline, "no replayed tick fired the rule within 60 s"
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # more ticks go by: a rule that fires once stays fired once
    firings = await api.get(f"/api/alerts/{rule_id}/firings", headers=auth)
    assert firings.status_code == 200, firings.text
    assert len(firings.json()["firings"]) == 1
    fired = firings.json()["firings"][0]
    assert fired["trigger_id"] == "once"
    assert fired["price"] > 0
    assert len((await api.get("/api/notifications", headers=auth)).json()["notifications"]) == 1
    state = await api.get(f"/api/alerts/{rule_id}", headers=auth)
    assert state.json()["status"] == "fired"
