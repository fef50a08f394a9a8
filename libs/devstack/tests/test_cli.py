"""`aether-dev`: the local platform up with a declared service, checked with real clients, down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import boto3
import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from elasticsearch import AsyncElasticsearch
from pymongo import AsyncMongoClient

from aether_devstack.catalog import DevError, ServiceSpec, load_services, service_env
from aether_devstack.cli import DEV_OIDC_PORT, dev_oauth_providers
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import DEV_PORTS, endpoints_for, free_port, tcp_open

pytestmark = pytest.mark.platform

# A tiny service run by the shared runner: it logs a greeting and shows the env it was given.
PROBE_APP = """
import json, os
from fastapi import APIRouter
from aether_common.http import create_http_app
from aether_common.logging import get_logger
from aether_common.runner import run_service
from aether_common.settings import AetherSettings

class Settings(AetherSettings):
    service_name = "probe"

router = APIRouter()

@router.get("/env")
async def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("AETHER_", "PROBE_"))}

get_logger("probe").info("probe service says hello")
run_service(Settings(), create_http_app("probe", routers=[router]))
"""


class Up:
    """`aether-dev up` as a subprocess, its output collected line by line."""

    def __init__(self, tmp_path: Path, services_dir: Path) -> None:
        self.state_dir = tmp_path / "dev"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aether_devstack.cli",
                "--state-dir",
                str(self.state_dir),
                "up",
                "--services-dir",
                str(services_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "FORCE_COLOR"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 150.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, f"aether-dev exited early:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout}s:\n{self.output}"
            time.sleep(0.2)

    def finish(self, timeout: float = 90.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "aether_devstack.cli",
                "--state-dir",
                str(self.state_dir),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def declare_probe(services_dir: Path, database: str, topic: str, bucket: str) -> int:
    port = free_port()
    service = services_dir / "probe"
    service.mkdir(parents=True)
    (service / "app.py").write_text(PROBE_APP)
    (service / "pyproject.toml").write_text(f"""
[project]
name = "aether-probe"
version = "0"

[tool.aether]
command = ["python", "app.py"]
http_port = {port}
postgres_databases = ["{database}"]
topics = ["{topic}", {{ name = "{topic}.dlq", partitions = 1 }}]
buckets = ["{bucket}"]
mongo = true
env = {{ PROBE_DATABASE_URL = "{{database_url}}", PROBE_KAFKA = "{{kafka_bootstrap}}" }}
""")
    return port


def ports_free_or_skip() -> None:
    ports = DEV_PORTS | {"oidc": DEV_OIDC_PORT}
    taken = [f"{name} ({port})" for name, port in ports.items() if tcp_open(port)]
    if taken:
        pytest.skip(f"the fixed dev ports are taken by something else: {', '.join(taken)}")


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    made = {
        "database": f"aether_probe_{suffix}",
        "topic": f"aether.probe.{suffix}.v1",
        "bucket": f"aether-probe-{suffix}",
    }
    yield made
    asyncio.run(drop_database(made["database"]))


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def check_every_server(e: Endpoints, names: dict[str, str]) -> None:
    conn = await asyncpg.connect(e.postgres_dsn.rpartition("/")[0] + "/" + names["database"])
    assert await conn.fetchval("SELECT current_database()") == names["database"]
    await conn.close()
    r = aioredis.from_url(e.redis_url)
    assert await r.ping()
    await r.aclose()
    admin = AIOKafkaAdminClient(bootstrap_servers=e.kafka_bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
        assert {names["topic"], names["topic"] + ".dlq"} <= topics
        [described] = await admin.describe_topics([names["topic"]])
        assert len(described["partitions"]) == 3
    finally:
        await admin.close()
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(e.mongo_url)
    assert (await mongo.admin.command("ping"))["ok"] == 1
    await mongo.close()
    es = AsyncElasticsearch(e.elasticsearch_url)
    assert "version" in await es.info()
    await es.close()
    s3 = boto3.client(
        "s3",
        endpoint_url=e.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=e.s3_access_key,
        aws_secret_access_key=e.s3_secret_key,
    )
    s3.head_bucket(Bucket=names["bucket"])
    with smtplib.SMTP(e.smtp_host, e.smtp_port, timeout=5) as smtp:
        assert smtp.noop()[0] == 250


def get_json(url: str) -> dict[str, str]:
    data: dict[str, str] = httpx.get(url, timeout=5).json()
    return data


def test_up_serves_everything_then_ctrl_c_stops_it(tmp_path: Path, names: dict[str, str]) -> None:
    ports_free_or_skip()
    services = tmp_path / "services"
    port = declare_probe(services, **names)
    up = Up(tmp_path, services)
    try:
        up.wait_for_line("Aether local platform is up")
        endpoints = endpoints_for(up.state_dir, dict(DEV_PORTS))
        asyncio.run(check_every_server(endpoints, names))

        # The service runs with the platform's env and its own declared values.
        env = get_json(f"http://127.0.0.1:{port}/env")
        assert env["AETHER_ENV"] == "dev"
        assert env["AETHER_KAFKA_BOOTSTRAP"] == env["PROBE_KAFKA"] == "127.0.0.1:9092"
        assert env["AETHER_HTTP_PORT"] == str(port)
        assert env["AETHER_DATABASE_URL"].endswith("/" + names["database"])
        assert env["PROBE_DATABASE_URL"] == env["AETHER_DATABASE_URL"]
        assert env["AETHER_MONGO_DATABASE"] == "aether_probe"
        assert env["AETHER_PROBE_HTTP_URL"] == f"http://127.0.0.1:{port}"

        # The local OIDC provider auth signs in with (`devoidc`).
        discovery = get_json(f"http://127.0.0.1:{DEV_OIDC_PORT}/.well-known/openid-configuration")
        assert discovery["issuer"] == f"http://127.0.0.1:{DEV_OIDC_PORT}"

        # Its log lines: prefixed on the terminal, and in its own log file.
        hello = [line for line in up.lines if "probe service says hello" in line]
        assert hello
        assert hello[0].startswith("probe      | ")
        assert "probe service says hello" in (up.state_dir / "logs" / "probe.log").read_text()
        assert f"probe          http://127.0.0.1:{port}" in up.output
        assert str(up.state_dir / "logs") in up.output

        status = up.cli("status")
        assert status.returncode == 0, status.stdout + status.stderr
        for server in ("postgres", "redis", "kafka", "mongo", "elasticsearch", "s3", "smtp"):
            assert any(
                line.startswith(server) and " up " in line for line in status.stdout.splitlines()
            ), status.stdout
        assert any(
            line.startswith("probe") and " up " in line for line in status.stdout.splitlines()
        )

        up.proc.send_signal(signal.SIGINT)
        assert up.finish() == 0, up.output
    finally:
        if up.proc.poll() is None:
            up.cli("down")
    # The service stopped through its runner (clean exit), before the servers.
    out = up.output
    assert out.index("stopping services") < out.index("stopping servers")
    assert up.lines[-1] == "aether-dev | stopped"
    assert any(
        line.startswith("probe") and '"event":"stopped"' in line and '"exit_code":0' in line
        for line in up.lines
    ), out
    for name, dev_port in (DEV_PORTS | {"oidc": DEV_OIDC_PORT}).items():
        assert not tcp_open(dev_port), f"{name} still listening on {dev_port}"
    assert not tcp_open(port)
    assert not (up.state_dir / "run").exists()


def test_down_stops_a_platform_started_elsewhere(tmp_path: Path, names: dict[str, str]) -> None:
    ports_free_or_skip()
    services = tmp_path / "services"
    port = declare_probe(services, **names)
    up = Up(tmp_path, services)
    try:
        up.wait_for_line("Aether local platform is up")
        again = up.cli("up", "--services-dir", str(services))
        assert again.returncode == 1
        assert "already running" in again.stderr
        down = up.cli("down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert up.finish(timeout=10) == 0  # `down` asked it, and it stopped cleanly
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
            up.cli("down")
    for dev_port in [*DEV_PORTS.values(), DEV_OIDC_PORT, port]:
        assert not tcp_open(dev_port)
    assert not (up.state_dir / "run").exists()
    assert (up.state_dir / "logs" / "probe.log").exists()  # logs are kept for reading
    assert up.cli("down", "--purge").returncode == 0
    assert not up.state_dir.exists()


def test_down_cleans_up_after_up_was_killed(tmp_path: Path, names: dict[str, str]) -> None:
    ports_free_or_skip()
    services = tmp_path / "services"
    port = declare_probe(services, **names)
    up = Up(tmp_path, services)
    try:
        up.wait_for_line("Aether local platform is up")
        up.proc.kill()  # no clean-up ran: servers and the service are orphans now
        up.finish(timeout=10)
        assert tcp_open(DEV_PORTS["kafka"])
        down = up.cli("down")
        assert down.returncode == 0, down.stdout + down.stderr
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
        up.cli("down")
    for dev_port in [*DEV_PORTS.values(), DEV_OIDC_PORT, port]:
        assert not tcp_open(dev_port)
    assert not (up.state_dir / "run").exists()


# -- the declaration format, no servers needed
def write_pyproject(directory: Path, table: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "pyproject.toml").write_text(f"[project]\nname='x'\n\n[tool.aether]\n{table}\n")
    return directory.parent


def test_no_services_and_undeclared_directories_are_fine(tmp_path: Path) -> None:
    assert load_services(tmp_path) == []
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "pyproject.toml").write_text("[project]\nname='lib'\n")
    assert load_services(tmp_path) == []


def test_gateway_starts_last(tmp_path: Path) -> None:
    for name in ("gateway", "auth", "worker"):
        write_pyproject(tmp_path / name, 'command = ["python", "-V"]')
    assert [s.name for s in load_services(tmp_path)] == ["auth", "worker", "gateway"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('command = ["x"]\nhttp_prot = 1', "unknown key(s) http_prot"),
        ("http_port = 1", "`command` must be a non-empty list"),
        ('command = ["x"]\nhttp_port = "80"', "`http_port` must be a port number"),
        ('command = ["x"]\npostgres_databases = ["Auth-DB"]', "must be lowercase"),
        ('command = ["x"]\ntopics = [{ name = "t", parts = 3 }]', "each topic is a name"),
    ],
)
def test_bad_declarations_are_refused_clearly(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(DevError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_services(write_pyproject(tmp_path / "svc", table))


def test_env_templates_are_rendered(tmp_path: Path) -> None:
    spec = ServiceSpec(
        "auth",
        tmp_path,
        ["python"],
        http_port=3001,
        grpc_port=4001,
        postgres_databases=["aether_auth"],
        env={"AUTH_DB": "{database_url}", "X": "{{lit}}"},
    )
    env = service_env(spec, [spec], endpoints_for(tmp_path, dict(DEV_PORTS)), tmp_path)
    assert env["AUTH_DB"] == "postgresql://postgres@127.0.0.1:5432/aether_auth"
    assert env["X"] == "{lit}"
    assert env["AETHER_AUTH_GRPC_TARGET"] == "127.0.0.1:4001"
    bad = ServiceSpec("auth", tmp_path, ["python"], env={"Y": "{nope}"})
    with pytest.raises(DevError, match="bad template"):
        service_env(bad, [bad], endpoints_for(tmp_path, dict(DEV_PORTS)), tmp_path)


def test_auth_gets_the_local_provider_with_the_gateway_callback() -> None:
    [provider] = json.loads(dev_oauth_providers("http://127.0.0.1:8080"))

    assert provider["name"] == "devoidc"
    assert provider["issuer"] == f"http://127.0.0.1:{DEV_OIDC_PORT}"
    assert provider["redirect_uris"] == ["http://127.0.0.1:8080/api/auth/oauth/devoidc/callback"]
