"""The charts service in-process on a free gRPC port, against the session's real PostgreSQL
(devstack plugin) and the kit's auth peer serving a JWKS (`jwks_peer`), so charts verifies
tokens exactly as it will against auth; tokens are minted here with the private key.

The bundled datasets (about 130,000 bars) are loaded once per session into their own database
(`bundled_dsn`), which the read-only tests share; tests that write get a fresh database each
(`pg_dsn`) and load nothing unless they ask. The `charts` fixtures are the running service plus
the helpers tests share, since test modules cannot import each other here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from aether.charts.v1 import charts_pb2, charts_pb2_grpc
from aether_charts.app import ChartsApp
from aether_charts.config import ChartsSettings
from aether_charts.datasets import BUNDLED, Dataset
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import AppRunner, Callers, JwksPeer, SigningKey, fresh_database

if TYPE_CHECKING:  # only the type stubs know the async stub class
    Stub = charts_pb2_grpc.ChartsServiceAsyncStub
else:
    Stub = charts_pb2_grpc.ChartsServiceStub


def settings_for(
    dsn: str, auth_address: str, endpoints: Endpoints, **overrides: Any
) -> ChartsSettings:
    """Settings of a test's service; its chart images in a bucket of its own (created at
    start), so no test finds another's images cached. `dev`: the local S3 server's keys are
    the devstack's placeholders, which other environments refuse. The archive's bucket too."""
    return ChartsSettings.model_validate(
        {
            "environment": "dev",
            "database_url": dsn,
            "auth_grpc_target": auth_address,
            "database_pool_size": 4,
            "s3_endpoint": endpoints.s3_endpoint,
            "s3_access_key": endpoints.s3_access_key,
            "s3_secret_key": endpoints.s3_secret_key,
            "s3_bucket": testkit.unique_name("aether-t-charts-"),
            "archive_bucket": testkit.unique_name("aether-t-archive-"),
            "kafka_bootstrap": endpoints.kafka_bootstrap,
            "redis_url": endpoints.redis_url,
            # Cached answers are keyed by symbol and version: each service's own, as each
            # test's database is.
            "cache_prefix": testkit.unique_name("t-charts-cache-") + ":",
            **overrides,
        }
    )


@dataclass
class Charts(Callers):
    """The running service and the helpers tests share."""

    app: ChartsApp
    stub: Stub
    key: SigningKey
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user_id: str, **claims: Any) -> str:
        return testkit.mint(self.key, testkit.access_claims(sub=user_id, **claims))

    async def candles(self, symbol: str, /, **fields: Any) -> charts_pb2.GetCandlesResponse:
        return await self.stub.GetCandles(
            charts_pb2.GetCandlesRequest(symbol=symbol, **fields), metadata=self.auth("reader")
        )

    async def all_candles(self, symbol: str, /, **fields: Any) -> list[charts_pb2.Candle]:
        """Every page, following the cursor."""
        out: list[charts_pb2.Candle] = []
        cursor = ""
        while True:
            page = await self.candles(symbol, cursor=cursor, **fields)
            out.extend(page.candles)
            if not page.next_cursor:
                return out
            cursor = page.next_cursor

    async def import_bars(
        self, symbol: str, csv: str, *, admin: bool = True, **fields: Any
    ) -> charts_pb2.ImportBarsResponse:
        metadata = self.admin("importer") if admin else self.auth("someone")
        return await self.stub.ImportBars(
            charts_pb2.ImportBarsRequest(symbol=symbol, csv=csv.encode(), **fields),
            metadata=metadata,
        )


StartCharts = Callable[..., Awaitable[Charts]]


async def _start(
    runner: AppRunner,
    settings: ChartsSettings,
    key: SigningKey,
    datasets: tuple[Dataset, ...],
    *,
    events: bool = False,
) -> Charts:
    app = ChartsApp(settings, grpc_host="127.0.0.1", grpc_port=0, datasets=datasets)
    await runner.start(app.components(events=events))
    stub: Stub = charts_pb2_grpc.ChartsServiceStub(runner.connect(app.grpc.address, timeout=30))
    return Charts(app, stub, key)


@pytest.fixture(scope="session")
async def bundled_dsn(
    aether_endpoints: Endpoints, jwks_peer: JwksPeer, signing_key: SigningKey
) -> AsyncIterator[str]:
    """A database with the bundled datasets loaded (by the service's own loader)."""
    async with fresh_database(aether_endpoints.postgres_dsn) as dsn:
        runner = AppRunner()
        try:
            charts = await _start(
                runner,
                settings_for(dsn, jwks_peer.address, aether_endpoints),
                signing_key,
                BUNDLED,
            )
            await charts.app.loader.done()
        finally:
            await runner.stop()
        yield dsn


@pytest.fixture
async def start_charts(
    pg_dsn: str, signing_key: SigningKey, jwks_peer: JwksPeer, aether_endpoints: Endpoints
) -> AsyncIterator[StartCharts]:
    """Start the service (the wiring of `python -m aether_charts`, gRPC on a free port) on this
    test's fresh database, or on `dsn=`; `datasets=` the bundled ones it loads (none);
    `events=True` with the live feed (Kafka, Redis; pass a `topic_prefix`)."""
    runner = AppRunner()

    async def start(
        *,
        dsn: str | None = None,
        datasets: tuple[Dataset, ...] = (),
        events: bool = False,
        **overrides: Any,
    ) -> Charts:
        settings = settings_for(dsn or pg_dsn, jwks_peer.address, aether_endpoints, **overrides)
        return await _start(runner, settings, signing_key, datasets, events=events)

    yield start
    await runner.stop()


@pytest.fixture
async def charts(start_charts: StartCharts) -> Charts:
    """The service on a fresh, empty database."""
    return await start_charts()


@pytest.fixture
async def bundled(start_charts: StartCharts, bundled_dsn: str) -> Charts:
    """The service on the session's database of bundled datasets (read-only tests)."""
    return await start_charts(dsn=bundled_dsn, load_bundled=False)
