"""/api/alerts/* and /api/notifications/* against the real alerts service (in-process, on this
test's PostgreSQL database): the gateway and alerts both verify the caller's token against the
same auth peer's JWKS. charts is a scripted peer here (alerts asks it whether a symbol exists;
charts' routes have their own integration suite)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from aether.charts.v1 import charts_pb2, charts_pb2_grpc
from aether_alerts import repository
from aether_alerts.app import AlertsApp
from aether_alerts.config import AlertsSettings
from aether_common.errors import NotFound
from aether_common.lifecycle import Component
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import ScriptedPeer, await_mail, eventually, serve, webhook_receiver

CHARTS_SERVICE = charts_pb2.DESCRIPTOR.services_by_name["ChartsService"]


def quote(request: charts_pb2.GetQuoteRequest) -> charts_pb2.GetQuoteResponse:
    if request.symbol.upper() not in {"AAPL", "MSFT"}:
        raise NotFound(f"no instrument {request.symbol}")
    return charts_pb2.GetQuoteResponse(symbol=request.symbol.upper(), price=190.0)


StartAlerts = Callable[..., Awaitable[AlertsApp]]


@pytest.fixture
async def start_alerts_service(
    pg_dsn: str,
    fake_auth: Any,
    token_issuer_audience: tuple[str, str],
    aether_endpoints: Endpoints,
) -> AsyncIterator[StartAlerts]:
    """`await start_alerts_service(events=False, **settings)`: the real service in-process."""
    issuer, audience = token_issuer_audience
    charts = ScriptedPeer(CHARTS_SERVICE, answers={"GetQuote": quote})
    servicer = charts.servicer(charts_pb2_grpc.ChartsServiceServicer)
    started: list[Component] = []

    async def start(*, events: bool = False, **overrides: Any) -> AlertsApp:
        settings = AlertsSettings.model_validate(
            {
                "environment": "dev",
                "database_url": pg_dsn,
                "auth_grpc_target": fake_auth.address,
                "charts_grpc_target": charts.address,
                "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
                "redis_url": aether_endpoints.redis_url,
                "smtp_host": aether_endpoints.smtp_host,
                "smtp_port": aether_endpoints.smtp_port,
                "jwt_issuer": issuer,
                "jwt_audience": audience,
                "quota_free": 3,
                **overrides,
            }
        )
        app = AlertsApp(settings, grpc_host="127.0.0.1", grpc_port=0)
        for component in app.components(events=events):
            await component.start()
            started.append(component)
        return app

    async with serve(
        "charts", charts_pb2_grpc.add_ChartsServiceServicer_to_server, servicer, CHARTS_SERVICE
    ) as charts.address:
        try:
            yield start
        finally:
            for component in reversed(started):
                await component.stop()


@pytest.fixture
async def alerts_service(start_alerts_service: StartAlerts) -> AlertsApp:
    return await start_alerts_service()


@pytest.fixture
async def api(start_gateway: Any, alerts_service: AlertsApp) -> Any:
    return await start_gateway(alerts_grpc_target=alerts_service.grpc.address)


@pytest.fixture
def ada(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-ada')}"}


RULE = {
    "symbol": "AAPL",
    "condition": "price_above",
    "value": 190,
    "frequency": "once",
    "channels": ["in_app", "email"],
}


async def test_a_rule_through_its_whole_life(api: Any, ada: dict[str, str]) -> None:
    created = await api.post("/api/alerts", json=RULE, headers=ada)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["symbol"] == "AAPL"
    assert rule["status"] == "active"
    assert rule["interval"] is None
    assert rule["channels"] == ["in_app", "email"]
    rule_id = rule["id"]

    assert (await api.get(f"/api/alerts/{rule_id}", headers=ada)).json() == rule
    listed = (await api.get("/api/alerts", params={"symbol": "AAPL"}, headers=ada)).json()
    assert listed == {"rules": [rule], "next_cursor": None}

    channel = RULE | {
        "condition": "entering_channel",
        "value": 0,
        "params": {"lower": 180, "upper": 200},
        "frequency": "every_time",
        "cooldown_s": 300,
        "expires_at": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
        "version": 1,
    }
    updated = await api.put(f"/api/alerts/{rule_id}", json=channel, headers=ada)
    assert updated.status_code == 200, updated.text
    assert updated.json()["params"] == {"lower": 180.0, "upper": 200.0}
    assert updated.json()["version"] == 2
    stale = await api.put(f"/api/alerts/{rule_id}", json=channel, headers=ada)
    assert stale.status_code == 422, stale.text

    paused = await api.post(f"/api/alerts/{rule_id}/pause", headers=ada)
    assert paused.json()["status"] == "paused"
    resumed = await api.post(f"/api/alerts/{rule_id}/resume", headers=ada)
    assert resumed.json()["status"] == "active"

    fired = await api.post(f"/api/alerts/{rule_id}/test", headers=ada)
    assert fired.status_code == 201, fired.text
    assert fired.json()["test"] is True
    history = (await api.get(f"/api/alerts/{rule_id}/firings", headers=ada)).json()
    assert [f["id"] for f in history["firings"]] == [fired.json()["id"]]

    assert (await api.get("/api/notifications/unread-count", headers=ada)).json() == {"unread": 1}
    inbox = await api.get("/api/notifications", params={"order": "unread_first"}, headers=ada)
    (note,) = inbox.json()["notifications"]
    assert note["rule_id"] == rule_id
    assert note["read_at"] is None
    read = await api.post(f"/api/notifications/{note['id']}/read", headers=ada)
    assert read.json()["read_at"] is not None
    assert (await api.post("/api/notifications/read-all", headers=ada)).json() == {"marked": 0}
    assert (await api.get("/api/notifications/unread-count", headers=ada)).json() == {"unread": 0}

    deleted = await api.delete(f"/api/alerts/{rule_id}", headers=ada)
    assert deleted.status_code == 204
    assert (await api.get(f"/api/alerts/{rule_id}", headers=ada)).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        (RULE | {"condition": "price_sideways"}, 400, "condition"),
        (RULE | {"channels": []}, 400, "channels"),
        (RULE | {"params": {"length": 3}}, 400, "params"),
        (RULE | {"value": -1}, 400, "value"),  # the service's check
        (RULE | {"symbol": "NOPE"}, 400, "NOPE"),  # charts does not know it
        (RULE | {"condition": "rsi_above", "value": 70}, 400, "interval"),
        (RULE | {"frequency": "every_time"}, 400, "cooldown"),
    ],
)
async def test_bad_rules_are_a_4xx_with_a_message(
    api: Any, ada: dict[str, str], body: dict[str, Any], status: int, mentions: str
) -> None:
    answer = await api.post("/api/alerts", json=body, headers=ada)
    assert answer.status_code == status, answer.text
    assert mentions in answer.text


async def test_the_quota_is_a_429_naming_the_limit(api: Any, ada: dict[str, str]) -> None:
    for _ in range(3):
        assert (await api.post("/api/alerts", json=RULE, headers=ada)).status_code == 201
    over = await api.post("/api/alerts", json=RULE, headers=ada)
    assert over.status_code == 429, over.text
    assert over.json()["error"] == "alert_quota_exceeded"
    assert "allows 3 active alert rules" in over.json()["detail"]


async def test_another_users_rule_and_notification_are_404(
    api: Any, ada: dict[str, str], token: Callable[..., str]
) -> None:
    rule_id = (await api.post("/api/alerts", json=RULE, headers=ada)).json()["id"]
    await api.post(f"/api/alerts/{rule_id}/test", headers=ada)
    note_id = (await api.get("/api/notifications", headers=ada)).json()["notifications"][0]["id"]
    eve = {"Authorization": f"Bearer {token(sub='u-eve')}"}
    for method, path in (
        ("GET", f"/api/alerts/{rule_id}"),
        ("DELETE", f"/api/alerts/{rule_id}"),
        ("POST", f"/api/alerts/{rule_id}/pause"),
        ("POST", f"/api/alerts/{rule_id}/test"),
        ("GET", f"/api/alerts/{rule_id}/firings"),
        ("POST", f"/api/notifications/{note_id}/read"),
    ):
        answer = await api.request(method, path, headers=eve)
        assert answer.status_code == 404, (method, path, answer.text)
    assert (await api.get("/api/alerts", headers=eve)).json() == {"rules": [], "next_cursor": None}


async def test_the_status_page_checks_alerts(api: Any) -> None:
    status = await api.get("/api/status")
    assert status.json()["dependencies"]["alerts"]["ok"] is True


async def test_without_a_token_it_is_401(api: Any) -> None:
    assert (await api.get("/api/alerts")).status_code == 401
    assert (await api.get("/api/notifications/unread-count")).status_code == 401


async def test_without_alerts_configured_it_is_503(start_gateway: Any, ada: dict[str, str]) -> None:
    api = await start_gateway()
    answer = await api.get("/api/alerts", headers=ada)
    assert answer.status_code == 503
    assert answer.json()["error"] == "alerts_not_configured"


async def test_webhooks_and_firing_deliveries_through_the_gateway(
    api: Any, ada: dict[str, str], token: Callable[..., str]
) -> None:
    created = await api.post(
        "/api/alerts/webhooks", json={"url": "https://example.com/hook"}, headers=ada
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_")
    listed = (await api.get("/api/alerts/webhooks", headers=ada)).json()
    assert listed == {"webhooks": [{k: v for k, v in hook.items() if k != "secret"}]}
    rotated = await api.post(f"/api/alerts/webhooks/{hook['id']}/rotate", headers=ada)
    assert rotated.json()["secret"] != hook["secret"]
    assert rotated.json()["previous_secret_until"] is not None
    bad = await api.post("/api/alerts/webhooks", json={"url": "ftp://x.example/"}, headers=ada)
    assert bad.status_code == 400
    assert "http" in bad.json()["detail"]

    rule_id = (await api.post("/api/alerts", json=RULE, headers=ada)).json()["id"]
    fired = (await api.post(f"/api/alerts/{rule_id}/test", headers=ada)).json()
    assert fired["deliveries"] == []  # the delivery consumer records them (not started here)
    listed = await api.get("/api/alerts/deliveries", params={"status": "failed"}, headers=ada)
    assert listed.json() == {"deliveries": [], "next_cursor": None}
    bogus = await api.get("/api/alerts/deliveries", params={"status": "lost"}, headers=ada)
    assert 400 <= bogus.status_code < 500
    one = await api.get(f"/api/alerts/firings/{fired['id']}", headers=ada)
    assert one.status_code == 200, one.text
    assert one.json()["id"] == fired["id"]
    eve = {"Authorization": f"Bearer {token(sub='u-eve')}"}
    for method, path in (
        ("GET", f"/api/alerts/firings/{fired['id']}"),
        ("POST", "/api/alerts/deliveries/00000000-0000-4000-8000-000000000000/replay"),
        ("DELETE", f"/api/alerts/webhooks/{hook['id']}"),
        ("POST", f"/api/alerts/webhooks/{hook['id']}/rotate"),
    ):
        answer = await api.request(method, path, headers=eve)
        assert answer.status_code == 404, (method, path, answer.text)
    assert (await api.delete(f"/api/alerts/webhooks/{hook['id']}", headers=ada)).status_code == 204
    assert (await api.get("/api/alerts/webhooks", headers=ada)).json() == {"webhooks": []}


async def test_a_fired_rule_reaches_socket_mailbox_webhook_and_inbox_once(
    serve_gateway: Any,
    fake_chat: Any,
    start_alerts_service: StartAlerts,
    topic_prefix: str,
    alerts_notify_prefix: str,
    token: Callable[..., str],
    maildir: Path,
) -> None:
    """End to end through the gateway: rule -> firing -> the delivery consumer -> the user's
    chat socket (the gateway's notify fan-out), the Maildir, the webhook receiver, the inbox."""
    alerts = await start_alerts_service(
        events=True,
        topic_prefix=topic_prefix,
        notify_prefix=alerts_notify_prefix,
        delivery_poll_s=0.1,
    )
    gateway = await serve_gateway(
        chat_grpc_target=fake_chat.address, alerts_grpc_target=alerts.grpc.address
    )
    async with webhook_receiver() as receiver:
        async with alerts.database.connection() as conn:  # what auth's user.registered gives
            await repository.set_contact(conn, "u-ada", "ada@example.com", replace=True)
        ada = {"Authorization": f"Bearer {token(sub='u-ada')}"}
        ws = await connect(gateway.ws_url, additional_headers=ada, compression=None, open_timeout=5)
        try:
            await asyncio.wait_for(ws.recv(), 5)  # ready
            async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as api:
                hook = await api.post(
                    "/api/alerts/webhooks", json={"url": receiver.url}, headers=ada
                )
                secret = hook.json()["secret"]
                body = RULE | {"channels": ["in_app", "email", "webhook"]}
                rule_id = (await api.post("/api/alerts", json=body, headers=ada)).json()["id"]
                fired = (await api.post(f"/api/alerts/{rule_id}/test", headers=ada)).json()

                frame: dict[str, Any] = {"type": ""}
                while frame["type"] != "notification":  # skip any other frame (a ping, say)
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
                assert frame["firing_id"] == fired["id"]
                mail = await await_mail(
                    maildir, "ada@example.com", "[test] Aether alert: AAPL price_above at 0"
                )
                assert "AAPL" in mail.get_payload()

                async def all_sent() -> bool:
                    got = (await api.get(f"/api/alerts/firings/{fired['id']}", headers=ada)).json()
                    return [d["status"] for d in got["deliveries"]] == ["sent"] * 3

                await eventually(all_sent, within=20, what="three deliveries sent")
                assert len(receiver.requests) == 1
                assert receiver.signed(0, secret)
                inbox = (await api.get("/api/notifications", headers=ada)).json()
                assert [n["id"] for n in inbox["notifications"]] == [frame["id"]]
                with pytest.raises(TimeoutError):  # exactly once on the socket
                    await asyncio.wait_for(ws.recv(), 1.0)
                assert len(receiver.requests) == 1
        finally:
            await ws.close()
