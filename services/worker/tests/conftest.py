"""The worker service in-process on a free gRPC port, against the session's real PostgreSQL,
Kafka and S3 (devstack plugin) and the kit's auth peer serving a JWKS (`jwks_peer`), so the
worker verifies tokens exactly as it will against auth; tokens are minted here.

Each test gets its own database, Kafka topic prefix and bucket. Tests bring their own job types
(a flaky, a poison, a slow one) through `start_worker(job_types=...)`: the app's constructor,
never a global. Settings are short (leases, backoffs, polls) so the suite stays quick. The
`Worker` handle is the running service plus the helpers tests share, since test modules cannot
import each other here.

Fixtures of the job-handler tests (backtest, chart.render):
- `charts_service`: a real charts service in-process (ChartsApp on a free gRPC port, its own
  PostgreSQL database and S3 bucket, verifying tokens against `jwks_peer`), holding GOOG as
  `backtesting` ships it (2,148 daily bars imported from the package's CSV), once per session:
  the handler tests only read it.
- `worker_token`: an access token as auth issues the worker's own (a service token with
  `charts:read`), minted fresh for each call.
- `job_context`: a JobContext double recording progress and artifacts, whose checkpoint raises
  JobCancelled from its n-th call on when asked (JobContext is our interface, not a datastore).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from aether.worker.v1 import worker_pb2, worker_pb2_grpc
from aether_auth.config import AuthSettings, ServiceClientSettings, secret_sha256
from aether_charts.app import ChartsApp
from aether_charts.config import ChartsSettings
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import AppRunner, Callers, JwksPeer, SigningKey, fresh_database
from aether_worker.app import WorkerApp
from aether_worker.candles import Token
from aether_worker.config import WorkerSettings
from aether_worker.handler import JobCancelled, JobType
from aether_worker.noop import NOOP
from aether_worker.transitions import Backoff

if TYPE_CHECKING:  # only the type stubs know the async stub class
    Stub = worker_pb2_grpc.WorkerServiceAsyncStub
else:
    Stub = worker_pb2_grpc.WorkerServiceStub

FINAL = ("completed", "failed", "cancelled")


def settings_for(
    dsn: str, auth: str, endpoints: Endpoints, prefix: str, **overrides: Any
) -> WorkerSettings:
    return WorkerSettings.model_validate(
        {
            "environment": "dev",
            "database_url": dsn,
            "database_pool_size": 6,
            "auth_grpc_target": auth,
            # Not asked: tests bring their own job types.
            "charts_grpc_target": "127.0.0.1:9",
            "ai_grpc_target": "127.0.0.1:9",
            "chat_grpc_target": "127.0.0.1:9",
            "alerts_grpc_target": "127.0.0.1:9",
            "memory_grpc_target": "127.0.0.1:9",
            "smtp_host": "127.0.0.1",
            "smtp_port": 9,
            "kafka_bootstrap": endpoints.kafka_bootstrap,
            "topic_prefix": prefix,
            "s3_endpoint": endpoints.s3_endpoint,
            "s3_access_key": endpoints.s3_access_key,
            "s3_secret_key": endpoints.s3_secret_key,
            "s3_bucket": testkit.unique_name("aether-t-worker-"),
            "work_partitions": 2,
            "work_fetch_max_wait_ms": 10,
            "outbox_poll_s": 0.01,
            "lease_s": 1.5,
            "scheduler_interval_s": 0.1,
            "retry_backoff_s": 0.2,
            "retry_max_backoff_s": 2.0,
            "watch_poll_s": 1.0,
            "stop_grace_s": 0.2,
            **overrides,
        }
    )


@dataclass
class Worker(Callers):
    """The running service and the helpers tests share."""

    app: WorkerApp
    stub: Stub
    key: SigningKey
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user_id: str, **claims: Any) -> str:
        return testkit.mint(self.key, testkit.access_claims(sub=user_id, **claims))

    def service_auth(self, name: str = "ai") -> tuple[tuple[str, str], ...]:
        """A service token's metadata (auth's IssueServiceToken shape)."""
        claims = {"roles": ["service"], "perms": [], "plan": None}
        return testkit.bearer_metadata(self.token(f"service:{name}", **claims))

    async def submit(
        self,
        metadata: tuple[tuple[str, str], ...],
        type_: str,
        params: dict[str, Any] | None = None,
        **fields: Any,
    ) -> worker_pb2.Job:
        request = worker_pb2.SubmitJobRequest(
            type=type_, params_json=orjson.dumps(params or {}).decode(), **fields
        )
        return (await self.stub.SubmitJob(request, metadata=metadata)).job

    async def get(self, metadata: tuple[tuple[str, str], ...], job_id: str) -> worker_pb2.Job:
        return (await self.stub.GetJob(worker_pb2.GetJobRequest(id=job_id), metadata=metadata)).job

    async def until(
        self,
        metadata: tuple[tuple[str, str], ...],
        job_id: str,
        check: Callable[[worker_pb2.Job], bool],
        within: float = 20.0,
        what: str = "the job's state",
    ) -> worker_pb2.Job:
        async def seen() -> worker_pb2.Job | None:
            job = await self.get(metadata, job_id)
            return job if check(job) else None

        found: worker_pb2.Job = await testkit.eventually(seen, within=within, what=what)
        return found

    async def finished(
        self, metadata: tuple[tuple[str, str], ...], job_id: str, within: float = 20.0
    ) -> worker_pb2.Job:
        return await self.until(
            metadata, job_id, lambda j: j.status in FINAL, within, "a final status"
        )

    async def statuses(self, job_id: str) -> list[tuple[str, str]]:
        """(previous, new) status of every status event the job wrote, in order (the outbox)."""
        from aether.events.v1.envelope_pb2 import EventEnvelope
        from aether.worker.v1 import events_pb2

        async with self.app.database.connection() as conn:
            rows = await conn.fetch(
                "SELECT envelope FROM event_outbox WHERE topic LIKE '%aether.job.status_changed.v1'"
                " ORDER BY seq"
            )
        changes = []
        for row in rows:
            envelope = EventEnvelope.FromString(row["envelope"])
            if envelope.subject == job_id:
                payload = events_pb2.JobStatusChanged.FromString(envelope.data)
                changes.append((payload.previous_status, payload.job.status))
        return changes


StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker(
    pg_dsn: str,
    signing_key: SigningKey,
    jwks_peer: JwksPeer,
    aether_endpoints: Endpoints,
    topic_prefix: str,
) -> AsyncIterator[StartWorker]:
    """Start the service (the wiring of `python -m aether_worker`, gRPC on a free port) on this
    test's database, topics and bucket, with `job_types` (default: noop). Called again, it
    starts a second replica on the same database and topics."""
    runner = AppRunner()
    bucket = testkit.unique_name("aether-t-worker-")

    async def start(
        *,
        job_types: Sequence[JobType] | None = None,
        events: bool = True,
        backoff: Backoff | None = None,
        **overrides: Any,
    ) -> Worker:
        settings = settings_for(
            pg_dsn,
            jwks_peer.address,
            aether_endpoints,
            topic_prefix,
            **({"s3_bucket": bucket} | overrides),
        )
        app = WorkerApp(
            settings,
            grpc_host="127.0.0.1",
            grpc_port=0,
            job_types=[NOOP] if job_types is None else job_types,
            backoff=backoff,
        )
        await runner.start(app.components(events=events))
        stub: Stub = worker_pb2_grpc.WorkerServiceStub(runner.connect(app.grpc.address, timeout=30))
        return Worker(app, stub, signing_key)

    yield start
    await runner.stop()


@pytest.fixture
async def worker(start_worker: StartWorker) -> Worker:
    """The service with noop, on a fresh database, running jobs."""
    return await start_worker()


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


@pytest.fixture(scope="session")
def auth_listing_worker(aether_endpoints: Endpoints) -> Callable[[str, str], AuthSettings]:
    """Settings of a real auth (on database `dsn`) whose service clients include the worker
    with `secret`, as AUTH_SERVICE_CLIENTS lists it: for tests where the worker gets its own
    token from IssueServiceToken."""

    def settings(dsn: str, secret: str) -> AuthSettings:
        return AuthSettings.model_validate(
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
                "password_hash_workers": 2,
                "service_clients": {
                    "worker": ServiceClientSettings(secret_sha256=secret_sha256(secret))
                },
            }
        )

    return settings


@pytest.fixture(scope="session")
def mint_service(signing_key: SigningKey) -> Callable[[str], str]:
    """An access token as auth issues service `name`'s own (no permissions)."""

    def mint(name: str) -> str:
        claims = testkit.access_claims(
            sub=f"service:{name}", roles=["service"], perms=[], plan=None
        )
        return testkit.mint(signing_key, claims)

    return mint


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
