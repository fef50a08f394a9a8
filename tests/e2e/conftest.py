"""Black-box suites through the gateway only.

With `AETHER_GATEWAY_URL` set (a running `make dev`, a cluster), the suites use that gateway.
Otherwise they start every declared service as its own process against the session's real
servers (`aether_platform`, from libs/devstack), on free ports with fresh databases.

Here the platform also gets a local OIDC provider (a subprocess, like a real third party) for
auth's OAuth login, its own Redis key prefixes (gateway limits, cache, denylist; auth's keys) and
an anonymous rate limit high enough that the suites' own anonymous calls never trip it; plans
keep their default limits (free: 60/min), which the rate-limit tests rely on.

Tests that need the servers' insides (the SMTP Maildir, the operator CLI on auth's database)
ask for `server_side`, which skips with the reason when the gateway is an external one.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import httpx
import pytest

from aether_devstack.cli import ServiceProcess, signal_group
from aether_devstack.fleet import START_TIMEOUT_S, Fleet
from aether_devstack.testkit import (
    OidcProvider,
    await_mail,
    fleet_env,
    oidc_provider_process,
    replica_spec,
    start_fleet_process,
)

OIDC_PROVIDER = "devoidc"
# Never fetched: the OAuth test reads code and state from the provider's redirect and hands
# them to the gateway's callback itself (what a web app's callback page does).
OAUTH_REDIRECT_URI = "http://127.0.0.1/e2e/oauth/callback"
# High enough for every anonymous call the suites make from 127.0.0.1 in one session.
ANONYMOUS_LIMIT = 100_000


def _external() -> str | None:
    url = os.environ.get("AETHER_GATEWAY_URL")
    return url.rstrip("/") if url else None


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    secret = "oidc-e2e-secret-" + secrets.token_hex(4)
    with oidc_provider_process("aether-e2e", secret, OAUTH_REDIRECT_URI) as running:
        yield running


@pytest.fixture(scope="session")
def aether_platform_env(oidc_provider: OidcProvider) -> dict[str, dict[str, str]]:
    run = secrets.token_hex(4)
    auth_prefix = f"e2e{run}:auth:"
    providers = [
        {
            "name": OIDC_PROVIDER,
            "display_name": "Dev OIDC",
            "issuer": oidc_provider.issuer,
            "client_id": oidc_provider.client_id,
            "client_secret": oidc_provider.client_secret,
            "redirect_uris": [oidc_provider.redirect_uri],
        }
    ]
    return {
        "auth": {
            "AUTH_OAUTH_PROVIDERS": json.dumps(providers),
            "AUTH_REDIS_PREFIX": auth_prefix,
        },
        "gateway": {
            "GATEWAY_REDIS_KEY_PREFIX": f"e2e{run}:gateway:",
            "GATEWAY_REVOCATION_KEY_PREFIX": auth_prefix + "revoked:",
            "GATEWAY_RATE_LIMIT_ANONYMOUS": str(ANONYMOUS_LIMIT),
        },
    }


@pytest.fixture(scope="session")
def gateway_url(request: pytest.FixtureRequest) -> str:
    external = _external()
    if external:
        return external
    fleet = request.getfixturevalue("aether_platform")
    url: str = fleet.http_url("gateway")
    return url


@pytest.fixture(scope="session")
def oauth_redirect_uri() -> str:
    """The redirect URI auth's `devoidc` provider accepts (`make dev`'s one when external)."""
    external = _external()
    if external:
        return os.environ.get(
            "AETHER_E2E_OAUTH_REDIRECT_URI", f"{external}/api/auth/oauth/{OIDC_PROVIDER}/callback"
        )
    return OAUTH_REDIRECT_URI


@pytest.fixture
async def api(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        yield client


@dataclass(frozen=True)
class ServerSide:
    """What only a platform started here offers: the mail auth sent, the operator CLI."""

    fleet: Fleet
    maildir: Path

    async def mail(self, to: str, subject: str, within: float = 10.0) -> Message:
        """The newest mail to `to` with `subject` the local SMTP server stored."""
        return await await_mail(self.maildir, to, subject, within)

    async def promote(self, email: str, *args: str) -> str:
        """`python -m aether_auth.admin promote EMAIL ARGS...` with auth's own environment."""
        env = fleet_env(self.fleet, self.fleet.spec("auth"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aether_auth.admin",
            "promote",
            email,
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, f"admin CLI failed ({proc.returncode}): {err.decode()}"
        return out.decode()


@pytest.fixture(scope="session")
def server_side(request: pytest.FixtureRequest) -> ServerSide:
    if _external():
        pytest.skip(
            "needs the servers' insides (SMTP Maildir, auth's database via the admin CLI); "
            "AETHER_GATEWAY_URL points at an external gateway"
        )
    fleet: Fleet = request.getfixturevalue("aether_platform")
    if not fleet.endpoints.maildir:
        pytest.skip("this backend's SMTP server does not expose its mail (AETHER_MAILDIR)")
    return ServerSide(fleet, Path(fleet.endpoints.maildir))


# -- chat: a second gateway, and the chat service's own process -----------------------------------
@pytest.fixture(scope="session")
def second_gateway_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Another gateway process against the same platform (its own hub and fan-out connection).

    External platforms: `AETHER_E2E_SECOND_GATEWAY_URL` (another replica behind no balancer);
    the tests that need it skip without it.
    """
    external = _external()
    if external:
        second = os.environ.get("AETHER_E2E_SECOND_GATEWAY_URL")
        if not second:
            pytest.skip("AETHER_GATEWAY_URL is external; set AETHER_E2E_SECOND_GATEWAY_URL")
        yield second.rstrip("/")
        return
    fleet: Fleet = request.getfixturevalue("aether_platform")
    spec = replica_spec(fleet, "gateway")
    process = ServiceProcess(spec, fleet.log_dir / "gateway-2.log")
    try:
        start_fleet_process(
            fleet, process, within=START_TIMEOUT_S, env={"AETHER_HTTP_PORT": str(spec.http_port)}
        )
        yield f"http://127.0.0.1:{spec.http_port}"
    finally:
        process.stop()


@dataclass(frozen=True)
class ServiceControl:
    """Kill and restart one of the platform's service processes (fault tests)."""

    fleet: Fleet

    def kill(self, name: str) -> None:
        """SIGKILL: no graceful stop, nothing in flight gets finished."""
        proc = self.fleet.process(name).proc
        assert proc is not None, f"{name} was never started"
        assert proc.poll() is None, f"{name} is not running"
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def start(self, name: str) -> None:
        """Start it again (same ports, same environment) and wait for its /healthz."""
        process = self.fleet.process(name)
        start_fleet_process(self.fleet, process, within=START_TIMEOUT_S)
        # /healthz answers before the components (gRPC among them) have started: /readyz after.
        deadline = time.monotonic() + START_TIMEOUT_S
        ready = f"http://127.0.0.1:{process.spec.http_port}/readyz"
        while httpx.get(ready, timeout=2).status_code != 200:
            assert process.exit_code is None, f"{name} exited with {process.exit_code}"
            assert time.monotonic() < deadline, f"{name} not ready after {START_TIMEOUT_S} s"
            time.sleep(0.1)


@pytest.fixture(scope="session")
def service_control(request: pytest.FixtureRequest) -> ServiceControl:
    if _external():
        pytest.skip("kills a service process: needs the platform started here, not an external one")
    return ServiceControl(request.getfixturevalue("aether_platform"))


@pytest.fixture(scope="session")
async def chat_ready(gateway_url: str) -> None:
    """Wait until chat answers through the gateway (at most 90 s): the platform started here is
    ready when its services' /readyz say so, but an external one (AETHER_GATEWAY_URL) or a chat
    just restarted by a test may still be starting."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        email = f"chat-ready.{secrets.token_hex(5)}@example.com"
        password = "correct horse battery staple"
        registered = await client.post(
            "/api/auth/register", json={"email": email, "password": password}
        )
        assert registered.status_code == 201, registered.text
        login = await client.post("/api/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['tokens']['access_token']}"}
        deadline = time.monotonic() + 90
        while True:
            response = await client.get("/api/chat/rooms", headers=headers)
            if response.status_code != 503:
                assert response.status_code == 200, response.text
                return
            assert time.monotonic() < deadline, f"chat still unavailable: {response.text}"
            await asyncio.sleep(1.0)
