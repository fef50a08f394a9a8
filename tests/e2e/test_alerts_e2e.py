"""Alerts end to end through the gateway: a rule on a symbol charts knows -> listed, paused,
resumed -> a test firing lands in the inbox once -> read -> refusals with a message (an unknown
symbol, an impossible threshold, another user's rule). The API is docs/alerts.md."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import httpx
from websockets.asyncio.client import connect

from aether_devstack.testkit import eventually, webhook_receiver

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


async def test_the_replayed_feed_fires_a_rule_to_every_channel_once(
    api: httpx.AsyncClient, gateway_url: str, server_side: Any, chat_ready: None
) -> None:
    """`make dev` (and this platform) replays bundled history. A rule the next AAPL price
    meets fires through the engine, once: the user's chat socket gets the notification, the
    mail arrives in the local Maildir, the webhook receiver gets a valid signature, and the
    inbox shows it."""
    email = f"alerts.{secrets.token_hex(5)}@example.com"
    registered = await api.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    auth = {"Authorization": f"Bearer {login.json()['tokens']['access_token']}"}
    await charts_knows(api, auth, "AAPL")
    ws_url = gateway_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    async with (
        webhook_receiver() as receiver,
        connect(ws_url + "/api/chat/connect", additional_headers=auth) as ws,
    ):
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
        hook = await api.post("/api/alerts/webhooks", json={"url": receiver.url}, headers=auth)
        assert hook.status_code == 201, hook.text
        # Any price is above 0.01: the next replayed tick fires it.
        rule = {**RULE, "value": 0.01, "channels": ["in_app", "email", "webhook"]}
        created = await api.post("/api/alerts", json=rule, headers=auth)
        assert created.status_code == 201, created.text
        rule_id = created.json()["id"]

        frame: dict[str, Any] = {"type": ""}
        deadline = time.monotonic() + 60
        while frame["type"] != "notification":  # skip other frames (a ping, say)
            left = deadline - time.monotonic()
            assert left > 0, "no notification on the chat socket within 60 s"
            frame = json.loads(await asyncio.wait_for(ws.recv(), left))
            if frame["type"] == "ping":
                await ws.send(json.dumps({"type": "pong"}))
        assert (frame["rule_id"], frame["symbol"], frame["test"]) == (rule_id, "AAPL", False)

        async def delivered() -> dict[str, Any] | None:
            got = (await api.get(f"/api/alerts/firings/{frame['firing_id']}", headers=auth)).json()
            statuses = [d["status"] for d in got["deliveries"]]
            return got if statuses == ["sent"] * 3 else None

        firing = await eventually(delivered, within=30, what="three deliveries sent")
        assert firing["trigger_id"] == "once"
        mail = await server_side.mail(
            email, f"Aether alert: AAPL price_above at {firing['price']:g}", within=20
        )
        assert "AAPL" in mail.get_payload()
        assert len(receiver.requests) == 1
        assert receiver.signed(0, hook.json()["secret"])
        await asyncio.sleep(2.0)  # more ticks go by: a rule that fires once fired once
        firings = (await api.get(f"/api/alerts/{rule_id}/firings", headers=auth)).json()
        assert len(firings["firings"]) == 1
        inbox = (await api.get("/api/notifications", headers=auth)).json()["notifications"]
        assert [n["id"] for n in inbox] == [frame["id"]]
        assert len(receiver.requests) == 1
        state = await api.get(f"/api/alerts/{rule_id}", headers=auth)
        assert state.json()["status"] == "fired"


async def test_an_indicator_rule_fires_on_a_replayed_bar_close(api: httpx.AsyncClient) -> None:
    """An RSI rule is evaluated when a replayed daily bar of AAPL closes, on the RSI charts
    computes (read by the engine as the alerts service itself: its own token from auth)."""
    auth = await token(api)
    await charts_knows(api, auth, "AAPL")
    rule = {**RULE, "condition": "rsi_above", "value": 1, "interval": "1d"}  # any real RSI
    created = await api.post("/api/alerts", json=rule, headers=auth)
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]

    async def fired() -> list[dict[str, Any]]:
        answer = await api.get(f"/api/alerts/{rule_id}/firings", headers=auth)
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["firings"]
        return found

    (firing,) = await eventually(fired, within=60, what="the RSI rule fired")
    assert firing["trigger_id"] == "once"
    assert firing["symbol"] == "AAPL"
    assert firing["price"] > 0
