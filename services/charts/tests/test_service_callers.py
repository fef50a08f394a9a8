"""Service identity end to end: a test acting as alerts gets a service token from a real auth
(in-process, its own database) with the kit's ServiceCredentials, and charts, verifying tokens
against that auth's JWKS, serves it GetIndicators; ImportBars and a client without `charts:read`
are refused; the token is renewed before expiry and concurrent callers share one fetch."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from aether.charts.v1 import charts_pb2
from aether_alerts.config import AlertsSettings
from aether_auth.app import AuthApp
from aether_auth.config import AuthSettings, ServiceClientSettings, secret_sha256
from aether_common.errors import Forbidden, Unavailable
from aether_common.service_tokens import RENEW_AT, ServiceCredentials
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import AppRunner, failure, fresh_database

ALERTS_SECRET = secrets.token_urlsafe(32)
NOSY_SECRET = secrets.token_urlsafe(32)
TTL_S = 60


@dataclass
class Clock:
    """A monotonic clock the test moves forward (renewal without waiting for it)."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def auth_address(aether_endpoints: Endpoints) -> AsyncIterator[str]:
    """A real auth service with two clients: alerts (charts:read) and nosy (no permission)."""
    async with fresh_database(aether_endpoints.postgres_dsn) as dsn:
        settings = AuthSettings.model_validate(
            {
                "environment": "test",
                "database_url": dsn,
                "redis_url": aether_endpoints.redis_url,
                "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
                "smtp_host": aether_endpoints.smtp_host,
                "smtp_port": aether_endpoints.smtp_port,
                "public_base_url": "https://app.aether.test",
                "key_encryption_secret": secrets.token_urlsafe(32),
                "redis_prefix": testkit.unique_name("t-auth-") + ":",
                "housekeeping_interval_s": 3600,
                "service_token_ttl_s": TTL_S,
                "service_clients": {
                    "alerts": ServiceClientSettings(
                        secret_sha256=secret_sha256(ALERTS_SECRET), permissions=["charts:read"]
                    ),
                    "nosy": ServiceClientSettings(secret_sha256=secret_sha256(NOSY_SECRET)),
                },
            }
        )
        app = AuthApp(settings, grpc_host="127.0.0.1", grpc_port=0)
        runner = AppRunner()
        try:
            await runner.start(app.components(events=False))
            yield app.grpc.address
        finally:
            await runner.stop()


@pytest.fixture
async def credentials(auth_address: str) -> AsyncIterator[tuple[ServiceCredentials, Clock]]:
    """alerts' credentials, built from its settings as alerts builds them."""
    alerts = AlertsSettings.model_validate(
        {
            "environment": "test",
            "database_url": "postgresql://unused/none",
            "kafka_bootstrap": "unused:9092",
            "auth_grpc_target": auth_address,
            "charts_grpc_target": "unused:4005",
            "redis_url": "redis://unused:6379/0",
            "smtp_host": "unused",
            "smtp_port": 25,
            "webhook_secret_key": "k" * 44,  # a real key: "test" refuses the placeholder
            "auth_client_secret": ALERTS_SECRET,
        }
    )
    assert alerts.auth_client_secret is not None
    clock = Clock()
    creds = ServiceCredentials(
        alerts.auth_grpc_target,
        alerts.auth_client_id,
        alerts.auth_client_secret,
        timeout_s=alerts.auth_timeout_s,
        clock=clock,
    )
    await creds.start()
    yield creds, clock
    await creds.stop()


async def _indicators(charts: Any, token: str) -> charts_pb2.GetIndicatorsResponse:
    answer: charts_pb2.GetIndicatorsResponse = await charts.stub.GetIndicators(
        charts_pb2.GetIndicatorsRequest(symbol="AAPL", indicators="sma:20", limit=30),
        metadata=testkit.bearer_metadata(token),
    )
    return answer


async def test_alerts_reads_indicators_with_its_service_token(
    start_charts: Any,
    bundled_dsn: str,
    auth_address: str,
    credentials: tuple[ServiceCredentials, Clock],
) -> None:
    charts = await start_charts(dsn=bundled_dsn, auth_grpc_target=auth_address)
    creds, _ = credentials
    answer = await _indicators(charts, await creds.token())
    assert len(answer.times) == 30
    assert answer.series[0].indicator == "sma:20"

    # Writes stay a person's act: a service is never an admin of charts.
    refused = await failure(
        charts.stub.ImportBars(
            charts_pb2.ImportBarsRequest(symbol="AAPL", csv=b"time,open\n"),
            metadata=testkit.bearer_metadata(await creds.token()),
        )
    )
    assert isinstance(refused, Forbidden)


async def test_a_service_without_charts_read_is_refused(
    start_charts: Any, bundled_dsn: str, auth_address: str
) -> None:
    charts = await start_charts(dsn=bundled_dsn, auth_grpc_target=auth_address)
    nosy = ServiceCredentials(auth_address, "nosy", NOSY_SECRET, timeout_s=5)
    await nosy.start()
    try:
        refused = await failure(_indicators(charts, await nosy.token()))
    finally:
        await nosy.stop()
    assert isinstance(refused, Forbidden)
    assert "lacks the 'charts:read' permission" in refused.detail


async def test_token_is_cached_then_renewed_before_expiry(
    credentials: tuple[ServiceCredentials, Clock],
) -> None:
    creds, clock = credentials
    first = await creds.token()
    clock.now += TTL_S * RENEW_AT - 1
    assert await creds.token() == first
    assert creds.fetches == 1
    clock.now += 2  # past the renewal point, well before expiry
    second = await creds.token()
    assert second != first
    assert creds.fetches == 2


async def test_concurrent_callers_share_one_fetch(
    credentials: tuple[ServiceCredentials, Clock],
) -> None:
    creds, clock = credentials
    tokens = await asyncio.gather(*(creds.token() for _ in range(50)))
    assert len(set(tokens)) == 1
    assert creds.fetches == 1
    clock.now += TTL_S  # all due for renewal at once: still one request
    renewed = await asyncio.gather(*(creds.token() for _ in range(50)))
    assert len(set(renewed)) == 1
    assert creds.fetches == 2


async def test_wrong_secret_or_auth_away_is_unavailable(auth_address: str) -> None:
    wrong = ServiceCredentials(auth_address, "alerts", "not-" + ALERTS_SECRET, timeout_s=5)
    away = ServiceCredentials("127.0.0.1:1", "alerts", ALERTS_SECRET, timeout_s=1)
    errors = []
    for creds in (wrong, away):
        await creds.start()
        try:
            with pytest.raises(Unavailable) as caught:
                await creds.token()
            errors.append(caught.value)
        finally:
            await creds.stop()
    assert "cannot get a service token for 'alerts'" in errors[0].detail
    assert "invalid client id or secret" in errors[0].detail
    assert "auth" in errors[1].detail


async def test_a_failed_renewal_keeps_the_still_valid_token(
    credentials: tuple[ServiceCredentials, Clock],
) -> None:
    creds, clock = credentials
    first = await creds.token()
    creds.client_id = "revoked"  # auth now refuses every renewal
    clock.now += TTL_S * RENEW_AT + 1
    assert await creds.token() == first  # due for renewal, but still valid: kept
    assert creds.fetches == 2
    clock.now += TTL_S  # past its expiry: now the refusal reaches the caller
    with pytest.raises(Unavailable):
        await creds.token()
