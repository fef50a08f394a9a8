"""Fixtures of the worker's job-handler tests (backtest, chart.render).

- `charts_service`: a real charts service in-process (ChartsApp on a free gRPC port, its own
  PostgreSQL database and S3 bucket from the devstack plugin, verifying tokens against the kit's
  auth peer `jwks_peer`), holding GOOG as `backtesting` ships it (backtesting.test.GOOG,
  2,148 daily bars imported from the package's CSV), once per session: the handler tests only
  read it.
- `worker_token`: an access token as auth issues the worker's own (a service token with
  `charts:read`), minted fresh for each call.
- `job_context`: a JobContext double recording progress and artifacts, whose checkpoint raises
  JobCancelled from its n-th call on when asked (JobContext is our interface, not a datastore).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from aether_charts.app import ChartsApp
from aether_charts.config import ChartsSettings
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import AppRunner, JwksPeer, SigningKey, fresh_database
from aether_worker.candles import Token
from aether_worker.handler import JobCancelled


def backtesting_csv(symbol: str) -> bytes:
    """backtesting's bundled CSV of `symbol`, with the header charts' import reads."""
    path = Path(
        str(
            metadata.distribution("backtesting").locate_file(
                Path("backtesting", "test", f"{symbol}.csv")
            )
        )
    )
    _, _, rows = path.read_text().partition("\n")
    return ("time,open,high,low,close,volume\n" + rows).encode()


@dataclass(frozen=True)
class ChartsService:
    address: str
    app: ChartsApp


@pytest.fixture(scope="session")
async def charts_service(
    aether_endpoints: Endpoints, jwks_peer: JwksPeer
) -> AsyncIterator[ChartsService]:
    async with fresh_database(aether_endpoints.postgres_dsn, "aether_t_wcharts_") as dsn:
        settings = ChartsSettings.model_validate(
            {
                # dev: the local S3 server's keys are the devstack's placeholders, which other
                # environments refuse.
                "environment": "dev",
                "database_url": dsn,
                "database_pool_size": 3,
                "auth_grpc_target": jwks_peer.address,
                "load_bundled": False,
                "s3_endpoint": aether_endpoints.s3_endpoint,
                "s3_access_key": aether_endpoints.s3_access_key,
                "s3_secret_key": aether_endpoints.s3_secret_key,
                "s3_bucket": testkit.unique_name("aether-t-wcharts-"),
                "archive_bucket": testkit.unique_name("aether-t-warchive-"),
                "archive_interval_s": 0,
                "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
                "redis_url": aether_endpoints.redis_url,
                "cache_prefix": testkit.unique_name("t-wcharts-cache-") + ":",
            }
        )
        app = ChartsApp(settings, grpc_host="127.0.0.1", grpc_port=0)
        runner = AppRunner()
        try:
            await runner.start(app.components(events=False))
            await app.service.import_file(
                app.database,
                "GOOG",
                backtesting_csv("GOOG"),
                name="Google Inc.",
                timezone="America/New_York",
                resolution="1d",
            )
            yield ChartsService(app.grpc.address, app)
        finally:
            await runner.stop()


@pytest.fixture(scope="session")
def worker_token(signing_key: SigningKey) -> Token:
    async def token() -> str:
        claims = testkit.access_claims(
            sub="service:worker", roles=["service"], perms=["charts:read"], plan=None
        )
        return testkit.mint(signing_key, claims)

    return token


@dataclass
class RecordingContext:
    """A JobContext that records what the handler reports; `cancel_at`: the checkpoint call
    (1 = the first) from which on it raises JobCancelled, as a cancelled job's would."""

    job_id: str = "job-1"
    owner_id: str = "user-1"
    attempt: int = 1
    cancel_at: int | None = None
    progress_log: list[tuple[int, str]] = field(default_factory=list)
    artifacts: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    checkpoints: int = 0

    async def progress(self, percent: int, message: str = "") -> None:
        self.progress_log.append((percent, message))
        await self.checkpoint()

    async def checkpoint(self) -> None:
        self.checkpoints += 1
        if self.cancel_at is not None and self.checkpoints >= self.cancel_at:
            raise JobCancelled()

    async def put_artifact(self, name: str, data: bytes, content_type: str) -> None:
        self.artifacts[name] = (data, content_type)


@pytest.fixture
def job_context() -> Callable[..., RecordingContext]:
    def make(**fields: Any) -> RecordingContext:
        return RecordingContext(**fields)

    return make
