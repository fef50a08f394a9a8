"""`python -m aether_worker` as a real process, configured from the environment the way
`aether-dev` and the Helm chart configure it: it migrates, serves, runs jobs and stops cleanly;
killed with SIGKILL mid-job, its job is taken up again once the lease runs out and finished
exactly once. Bad settings stop it with their names."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from aether.worker.v1 import worker_pb2, worker_pb2_grpc
from aether_common.grpc import create_channel
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port
from aether_devstack.testkit import JwksPeer, SigningKey, service_process
from aether_worker.__main__ import main

LEASE_S = 1.5


@pytest.fixture
def service_env(
    aether_endpoints: Endpoints, pg_dsn: str, jwks_peer: JwksPeer, topic_prefix: str
) -> dict[str, str]:
    """The devstack's AETHER_* names, as `aether-dev up` sets them, and short timings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "AETHER_"))}
    return (
        env
        | aether_endpoints.as_env()
        | {
            "AETHER_ENV": "dev",
            "AETHER_DATABASE_URL": pg_dsn,
            "AETHER_AUTH_GRPC_TARGET": jwks_peer.address,
            # noop jobs only: charts, ai and chat are never asked.
            "AETHER_CHARTS_GRPC_TARGET": "127.0.0.1:9",
            "AETHER_AI_GRPC_TARGET": "127.0.0.1:9",
            "AETHER_CHAT_GRPC_TARGET": "127.0.0.1:9",
            "AETHER_ALERTS_GRPC_TARGET": "127.0.0.1:9",
            "AETHER_MEMORY_GRPC_TARGET": "127.0.0.1:9",
            "AETHER_HTTP_PORT": str(free_port()),
            "AETHER_GRPC_PORT": str(free_port()),
            "AETHER_LOG_JSON": "false",
            "WORKER_TOPIC_PREFIX": topic_prefix,
            "WORKER_S3_BUCKET": testkit.unique_name("aether-t-worker-"),
            "WORKER_LEASE_S": str(LEASE_S),
            "WORKER_WORK_FETCH_MAX_WAIT_MS": "10",
            "WORKER_OUTBOX_POLL_S": "0.01",
            "WORKER_SCHEDULER_INTERVAL_S": "0.1",
        }
    )


@pytest.fixture
def service(service_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with service_process("aether_worker", service_env, ready_within_s=60) as proc:
        yield proc


def admin_metadata(key: SigningKey) -> tuple[tuple[str, str], ...]:
    token = testkit.mint(key, testkit.access_claims(sub="ops-1", roles=["admin"], plan="admin"))
    return testkit.bearer_metadata(token)


async def test_the_process_serves_runs_jobs_and_stops_cleanly(
    service: subprocess.Popen[bytes], service_env: dict[str, str], signing_key: SigningKey
) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{service_env['AETHER_HTTP_PORT']}"
    ) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert {"postgres", "s3", "auth-jwks", "grpc", "runner"} <= set(ready.json()["checks"])
        assert (await http.get("/healthz")).json()["service"] == "worker"

    admin = admin_metadata(signing_key)
    target = f"127.0.0.1:{service_env['AETHER_GRPC_PORT']}"
    async with create_channel(target, default_timeout=30) as channel:
        stub: Any = worker_pb2_grpc.WorkerServiceStub(channel)
        request = worker_pb2.SubmitJobRequest(type="noop", params_json='{"sleep_ms": 10}')
        job = (await stub.SubmitJob(request, metadata=admin)).job

        async def completed() -> bool:
            answer = await stub.GetJob(worker_pb2.GetJobRequest(id=job.id), metadata=admin)
            return bool(answer.job.status == "completed")

        await testkit.eventually(completed, within=30, what="the noop job completed")

    service.send_signal(signal.SIGTERM)
    assert service.wait(30) == 0


async def test_a_worker_killed_mid_job_has_its_job_finished_once_by_another(
    service: subprocess.Popen[bytes],
    service_env: dict[str, str],
    signing_key: SigningKey,
    start_worker: Any,
) -> None:
    admin = admin_metadata(signing_key)
    target = f"127.0.0.1:{service_env['AETHER_GRPC_PORT']}"
    async with create_channel(target, default_timeout=30) as channel:
        stub: Any = worker_pb2_grpc.WorkerServiceStub(channel)
        request = worker_pb2.SubmitJobRequest(type="noop", params_json='{"sleep_ms": 4000}')
        job = (await stub.SubmitJob(request, metadata=admin)).job

        async def mid_job() -> bool:
            answer = await stub.GetJob(worker_pb2.GetJobRequest(id=job.id), metadata=admin)
            return bool(answer.job.status == "running" and answer.job.progress > 0)

        await testkit.eventually(mid_job, within=30, what="the job running, with progress")

    service.kill()  # SIGKILL: no shutdown, the lease is simply never renewed again
    service.wait()

    # Another worker (same database, topics and bucket) takes the job up after the lease.
    other = await start_worker(
        lease_s=LEASE_S,
        s3_bucket=service_env["WORKER_S3_BUCKET"],
    )
    done = await other.finished(admin, job.id, within=40)

    assert done.status == "completed"
    assert done.attempts == 2
    assert orjson.loads(done.result_json)["attempt"] == 2
    changes = await other.statuses(job.id)
    assert [new for _, new in changes].count("completed") == 1
    assert ("running", "queued") in changes  # the lost attempt, queued again by the scheduler


def test_missing_settings_stop_the_process_with_their_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`main()` as `python -m aether_worker` runs it (in-process: the imports cost seconds)."""
    for name in list(os.environ):
        if name.startswith(("WORKER_", "AETHER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AETHER_ENV", "dev")

    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("worker: WorkerSettings: missing required setting")
    for name in (
        "WORKER_DATABASE_URL",
        "WORKER_KAFKA_BOOTSTRAP",
        "WORKER_AUTH_GRPC_TARGET",
        "WORKER_CHARTS_GRPC_TARGET",
        "WORKER_AI_GRPC_TARGET",
        "WORKER_CHAT_GRPC_TARGET",
        "WORKER_ALERTS_GRPC_TARGET",
        "WORKER_MEMORY_GRPC_TARGET",
    ):
        assert name in err
