"""`python -m aether_alerts` as a real process, configured from the environment the way
`aether-dev` and the Helm chart configure it: it migrates, serves and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether.alerts.v1 import alerts_pb2, alerts_pb2_grpc
from aether_alerts.__main__ import main
from aether_common.grpc import create_channel
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port
from aether_devstack.testkit import JwksPeer, ScriptedPeer, SigningKey, service_process


@pytest.fixture
def service_env(
    aether_endpoints: Endpoints, pg_dsn: str, jwks_peer: JwksPeer, charts_peer: ScriptedPeer
) -> dict[str, str]:
    """The devstack's AETHER_* names, as `aether-dev up` sets them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALERTS_", "AETHER_"))}
    return (
        env
        | aether_endpoints.as_env()
        | {
            "AETHER_ENV": "dev",
            "AETHER_DATABASE_URL": pg_dsn,
            "AETHER_AUTH_GRPC_TARGET": jwks_peer.address,
            "AETHER_CHARTS_GRPC_TARGET": charts_peer.address,
            "AETHER_HTTP_PORT": str(free_port()),
            "AETHER_GRPC_PORT": str(free_port()),
            "AETHER_LOG_JSON": "false",
        }
    )


@pytest.fixture
def service(service_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with service_process("aether_alerts", service_env, ready_within_s=60) as proc:
        yield proc


async def test_the_process_serves_and_stops_cleanly(
    service: subprocess.Popen[bytes], service_env: dict[str, str], signing_key: SigningKey
) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{service_env['AETHER_HTTP_PORT']}"
    ) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert {"postgres", "auth-jwks", "grpc"} <= set(ready.json()["checks"])
        assert (await http.get("/healthz")).json()["service"] == "alerts"

    token = testkit.mint(signing_key, testkit.access_claims(sub="proc-user"))
    auth = (("authorization", f"Bearer {token}"),)
    target = f"127.0.0.1:{service_env['AETHER_GRPC_PORT']}"
    async with create_channel(target, default_timeout=30) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(
            health_pb2.HealthCheckRequest(service="aether.alerts.v1.AlertsService")
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        stub: Any = alerts_pb2_grpc.AlertsServiceStub(channel)
        spec = alerts_pb2.RuleSpec(
            symbol="AAPL", condition="price_above", value=250, frequency="once", channels=["in_app"]
        )
        rule = (await stub.CreateRule(alerts_pb2.CreateRuleRequest(spec=spec), metadata=auth)).rule
        assert rule.status == "active"

    service.send_signal(signal.SIGTERM)
    assert service.wait(30) == 0


def test_missing_settings_stop_the_process_with_their_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`main()` as `python -m aether_alerts` runs it (in-process: the imports cost seconds)."""
    for name in list(os.environ):
        if name.startswith(("ALERTS_", "AETHER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AETHER_ENV", "dev")

    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("alerts: AlertsSettings: missing required setting")
    for name in ("ALERTS_DATABASE_URL", "ALERTS_AUTH_GRPC_TARGET", "ALERTS_CHARTS_GRPC_TARGET"):
        assert name in err
