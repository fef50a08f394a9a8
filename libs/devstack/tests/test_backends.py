"""The same tests run against any backend: here the external one, pointed at our servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aether_devstack.endpoints import Endpoints

PROBE_TEST = """
import asyncpg, redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

async def test_external_servers_answer(aether_endpoints, pg_dsn, redis_prefix):
    conn = await asyncpg.connect(pg_dsn)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()
    r = aioredis.from_url(aether_endpoints.redis_url)
    assert await r.ping()
    await r.aclose()
    producer = AIOKafkaProducer(bootstrap_servers=aether_endpoints.kafka_bootstrap)
    await producer.start()
    await producer.stop()
"""


def run_pytest(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE_TEST)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=session",
            "-o",
            "asyncio_default_test_loop_scope=session",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def test_external_backend_uses_addresses_from_env(
    aether_endpoints: Endpoints, tmp_path: Path
) -> None:
    env = os.environ | aether_endpoints.as_env() | {"AETHER_TEST_BACKEND": "external"}
    result = run_pytest(tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_external_backend_names_missing_env_vars(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AETHER_")}
    env["AETHER_TEST_BACKEND"] = "external"
    result = run_pytest(tmp_path, env)
    assert result.returncode != 0
    assert "external backend needs these env vars: AETHER_POSTGRES_DSN" in result.stdout


def test_unknown_backend_is_a_usage_error(tmp_path: Path) -> None:
    env = os.environ | {"AETHER_TEST_BACKEND": "docker-compose"}
    result = run_pytest(tmp_path, env)
    assert result.returncode != 0
    assert "AETHER_TEST_BACKEND must be one of" in result.stdout + result.stderr


def docker_reachable() -> bool:
    import docker

    try:
        return bool(docker.from_env().ping())
    except Exception:
        return False


def test_containers_backend_without_docker_says_so(tmp_path: Path) -> None:
    if docker_reachable():
        import pytest

        pytest.skip("a Docker engine is reachable: this test checks the message given without one")
    env = os.environ | {"AETHER_TEST_BACKEND": "containers"}
    result = run_pytest(tmp_path, env)
    assert result.returncode != 0
    assert "needs a reachable Docker engine" in result.stdout
