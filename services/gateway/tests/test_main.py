"""`python -m aether_gateway` as the e2e suites and devstack start it: env in, HTTP out, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest

from aether_common.settings import Environment
from aether_devstack.servers import free_port
from aether_gateway.config import GatewaySettings


async def wait_healthy(url: str, proc: asyncio.subprocess.Process, within: float = 30) -> None:
    async with httpx.AsyncClient() as client:
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            if proc.returncode is not None:
                raise AssertionError(f"gateway exited with {proc.returncode}")
            try:
                if (await client.get(url + "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("gateway did not become healthy")


async def test_the_process_serves_and_stops_cleanly(
    fake_auth: Any, redis_url: str, redis_prefix: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AETHER_ENV": "dev",
        "AETHER_HTTP_PORT": str(port),
        "AETHER_REDIS_URL": redis_url,
        "AETHER_AUTH_GRPC_TARGET": fake_auth.address,
        "GATEWAY_REDIS_KEY_PREFIX": redis_prefix,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aether_gateway",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, proc)
        async with httpx.AsyncClient(base_url=url) as client:
            status = await client.get("/api/status")
            jwks = await client.get("/api/auth/jwks")
            ready = await client.get("/readyz")

        assert status.status_code == 200, status.text
        assert "server" not in status.headers  # uvicorn's banner is off
        assert jwks.json()["keys"][0]["kid"] == fake_auth.jwks[0]["kid"]
        assert ready.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_missing_settings_stop_the_process_naming_the_env_var() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AETHER_", "GATEWAY_"))}
    env["AETHER_ENV"] = "dev"

    result = subprocess.run(
        [sys.executable, "-m", "aether_gateway"], env=env, capture_output=True, timeout=60
    )

    assert result.returncode == 2  # as every service: bad settings are a usage error
    assert b"AETHER_AUTH_GRPC_TARGET" in result.stderr
    assert b"AETHER_REDIS_URL" in result.stderr


def settings(**values: Any) -> GatewaySettings:
    return GatewaySettings(redis_url="redis://r", auth_grpc_target="auth:4001", **values)


def test_dev_listens_on_loopback_8080_and_elsewhere_where_configured() -> None:
    dev = settings(environment=Environment.DEV)
    prod = settings(environment=Environment.PROD)
    pinned = settings(environment=Environment.DEV, http_host="0.0.0.0")

    assert (dev.listen_host, dev.http_port) == ("127.0.0.1", 8080)
    assert prod.listen_host == "0.0.0.0"
    assert pinned.listen_host == "0.0.0.0"


def test_cors_origins_from_a_comma_separated_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CORS_ORIGINS", "https://a.test/, https://b.test")

    assert settings(environment=Environment.TEST).cors_origins == [
        "https://a.test",
        "https://b.test",
    ]


def test_a_wildcard_cors_origin_is_refused() -> None:
    with pytest.raises(ValueError, match="list the web origins"):
        settings(environment=Environment.TEST, cors_origins=["*"])
