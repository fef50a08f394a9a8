"""`python -m aether_auth` and `python -m aether_auth.admin` as real processes, configured from
the environment the way `aether-dev` and the Helm chart configure them."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aether.auth.v1 import auth_pb2, auth_pb2_grpc, events_pb2
from aether_auth import events
from aether_common.grpc import create_channel
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port
from aether_devstack.testkit import service_process

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"
DEVSTACK_ENV: dict[str, str] = tomllib.loads(PYPROJECT.read_text())["tool"]["aether"]["env"]


@pytest.fixture
def service_env(
    pg_dsn: str, redis_prefix: str, topic_prefix: str, aether_endpoints: Endpoints
) -> dict[str, str]:
    """The devstack's AETHER_* names plus the auth service's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "AETHER_"))}
    return (
        env
        | aether_endpoints.as_env()
        | {
            "AETHER_ENV": "dev",
            "AETHER_DATABASE_URL": pg_dsn,
            "AETHER_HTTP_PORT": str(free_port()),
            "AETHER_GRPC_PORT": str(free_port()),
            "AETHER_LOG_JSON": "false",
            "AUTH_KEY_ENCRYPTION_SECRET": "dev-only-" + secrets.token_hex(8),
            "AUTH_PUBLIC_BASE_URL": "http://127.0.0.1:8080",
            "AUTH_REDIS_PREFIX": redis_prefix,
            "AUTH_TOPIC_PREFIX": topic_prefix,
            # The devstack's value as pyproject.toml declares it (a format template).
            "AUTH_SERVICE_CLIENTS": DEVSTACK_ENV["AUTH_SERVICE_CLIENTS"].format_map({}),
        }
    )


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (local URL)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def service(service_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with service_process("aether_auth", service_env) as proc:
        yield proc


def _admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aether_auth.admin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_process_serves_health_jwks_grpc_and_stops_cleanly(
    service: subprocess.Popen[bytes], service_env: dict[str, str], kit: Any
) -> None:
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{service_env['AETHER_HTTP_PORT']}")
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert {"postgres", "redis", "signing-keys", "grpc", "outbox-relay-pg"} <= set(
        ready.json()["checks"]
    )
    response = await http.get("/.well-known/jwks.json")
    jwks = response.json()
    assert response.status_code == 200
    assert len(jwks["keys"]) == 1

    target = f"127.0.0.1:{service_env['AETHER_GRPC_PORT']}"
    async with create_channel(target, default_timeout=10) as channel:
        stub: Any = auth_pb2_grpc.AuthServiceStub(channel)
        answer = await stub.GetJwks(auth_pb2.GetJwksRequest())
        assert json.loads(answer.jwks_json) == jwks
        email = kit.unique_email()
        user = (
            await stub.Register(auth_pb2.RegisterRequest(email=email, password="long enough pw"))
        ).user
        # alerts' dev credentials (services/alerts/pyproject.toml) get a service token.
        issued = await stub.IssueServiceToken(
            auth_pb2.IssueServiceTokenRequest(
                client_id="alerts", client_secret="dev-only-alerts-service-secret"
            )
        )
        assert issued.access_token

    metrics = (await http.get("/metrics")).text
    await http.aclose()
    assert "aether_auth_password_hash_seconds_count 1.0" in metrics
    register_ok = 'code="OK",method="/aether.auth.v1.AuthService/Register"'
    assert f"aether_grpc_server_handled_total{{{register_ok}}} 1.0" in metrics

    # The relay publishes the registration to Kafka.
    topic = service_env["AUTH_TOPIC_PREFIX"] + events.REGISTERED
    records = await kit.read_topic(service_env["AETHER_KAFKA_BOOTSTRAP"], topic, 1)
    assert events_pb2.UserRegistered.FromString(records[0].value).user_id == user.id

    # The operator CLI, with the same environment: promote, then rotate keys.
    promoted = _admin(service_env, "promote", email, "admin")
    assert promoted.returncode == 0, promoted.stderr
    assert "plan admin, role admin" in promoted.stdout
    rotated = _admin(service_env, "rotate-keys")
    assert rotated.returncode == 0, rotated.stderr
    listed = _admin(service_env, "list-keys")
    assert listed.stdout.count("\n") == 2
    assert "retired" in listed.stdout

    service.send_signal(signal.SIGTERM)
    assert service.wait(30) == 0
