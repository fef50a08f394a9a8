"""The alerts service in-process on a free gRPC port, against the session's real PostgreSQL and
Kafka (devstack plugin) and two gRPC peers on real sockets:

- auth: the kit's AuthService (`jwks_peer`) serving a JWKS of a real key pair, so alerts verifies
  tokens exactly as it will against auth; tokens are minted here with the private key;
- charts: the kit's `ScriptedPeer` playing ChartsService, whose GetQuote knows `KNOWN` symbols
  and answers NOT_FOUND for others, as charts does (charts' own suite tests charts; this one
  tests what alerts does with its answers, outages included).

Each test gets its own database (and Kafka topic prefix when it starts events). The `alerts`
fixture is the running service plus the helpers tests share, since test modules cannot import
each other here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from aether.alerts.v1 import alerts_pb2, alerts_pb2_grpc
from aether.charts.v1 import charts_pb2, charts_pb2_grpc
from aether_alerts.app import AlertsApp
from aether_alerts.config import AlertsSettings
from aether_common.errors import NotFound
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import AppRunner, Callers, JwksPeer, ScriptedPeer, SigningKey, serve

if TYPE_CHECKING:  # only the type stubs know the async stub class
    Stub = alerts_pb2_grpc.AlertsServiceAsyncStub
else:
    Stub = alerts_pb2_grpc.AlertsServiceStub

CHARTS_SERVICE = charts_pb2.DESCRIPTOR.services_by_name["ChartsService"]
KNOWN = {"AAPL": 190.0, "MSFT": 410.0, "EURUSD": 1.08, "BRK.B": 420.0}


def quote(request: charts_pb2.GetQuoteRequest) -> charts_pb2.GetQuoteResponse:
    symbol = request.symbol.upper()
    if symbol not in KNOWN:
        raise NotFound(f"no instrument {symbol}")
    return charts_pb2.GetQuoteResponse(symbol=symbol, price=KNOWN[symbol])


@pytest.fixture
async def charts_peer() -> AsyncIterator[ScriptedPeer]:
    fake = ScriptedPeer(CHARTS_SERVICE, answers={"GetQuote": quote})
    servicer = fake.servicer(charts_pb2_grpc.ChartsServiceServicer)
    async with serve(
        "charts", charts_pb2_grpc.add_ChartsServiceServicer_to_server, servicer, CHARTS_SERVICE
    ) as fake.address:
        yield fake


def settings_for(
    dsn: str, auth: str, charts: str, endpoints: Endpoints, **overrides: Any
) -> AlertsSettings:
    return AlertsSettings.model_validate(
        {
            "environment": "dev",
            "database_url": dsn,
            "database_pool_size": 4,
            "auth_grpc_target": auth,
            "charts_grpc_target": charts,
            "kafka_bootstrap": endpoints.kafka_bootstrap,
            "redis_url": endpoints.redis_url,
            "smtp_host": endpoints.smtp_host,
            "smtp_port": endpoints.smtp_port,
            **overrides,
        }
    )


def spec(**fields: Any) -> alerts_pb2.RuleSpec:
    """A valid definition ("AAPL above 200, once, in-app") with `fields` replaced."""
    base: dict[str, Any] = {
        "symbol": "AAPL",
        "condition": "price_above",
        "value": 200.0,
        "frequency": "once",
        "channels": ["in_app"],
    }
    return alerts_pb2.RuleSpec(**(base | fields))


@dataclass
class Alerts(Callers):
    """The running service and the helpers tests share."""

    app: AlertsApp
    stub: Stub
    key: SigningKey
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user_id: str, **claims: Any) -> str:
        return testkit.mint(self.key, testkit.access_claims(sub=user_id, **claims))

    spec = staticmethod(spec)

    async def create(self, user: str, /, **fields: Any) -> alerts_pb2.Rule:
        created = await self.stub.CreateRule(
            alerts_pb2.CreateRuleRequest(spec=spec(**fields)), metadata=self.auth(user)
        )
        return created.rule

    async def outbox(self) -> list[str]:
        """The topics in the outbox, oldest first (events=False: nothing drains it)."""
        async with self.app.database.connection() as conn:
            rows = await conn.fetch("SELECT topic FROM event_outbox ORDER BY seq")
        return [r["topic"] for r in rows]


StartAlerts = Callable[..., Awaitable[Alerts]]


@pytest.fixture
async def start_alerts(
    pg_dsn: str,
    signing_key: SigningKey,
    jwks_peer: JwksPeer,
    charts_peer: ScriptedPeer,
    aether_endpoints: Endpoints,
) -> AsyncIterator[StartAlerts]:
    """Start the service (the wiring of `python -m aether_alerts`, gRPC on a free port) on this
    test's fresh database; `events=True` with the outbox relay and the consumer (pass a
    `topic_prefix`)."""
    runner = AppRunner()

    async def start(*, events: bool = False, **overrides: Any) -> Alerts:
        settings = settings_for(
            pg_dsn, jwks_peer.address, charts_peer.address, aether_endpoints, **overrides
        )
        app = AlertsApp(settings, grpc_host="127.0.0.1", grpc_port=0)
        await runner.start(app.components(events=events))
        stub: Stub = alerts_pb2_grpc.AlertsServiceStub(runner.connect(app.grpc.address, timeout=30))
        return Alerts(app, stub, signing_key)

    yield start
    await runner.stop()


@pytest.fixture
async def alerts(start_alerts: StartAlerts) -> Alerts:
    """The service on a fresh, empty database, without Kafka."""
    return await start_alerts()
