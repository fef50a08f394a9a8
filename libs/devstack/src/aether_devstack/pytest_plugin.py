"""pytest plugin: session-scoped real servers and per-test isolation.

`AETHER_TEST_BACKEND` picks where the servers come from:
- `native` (default): start them here as processes on free ports (servers.py);
- `containers`: testcontainers, when a Docker engine is reachable (containers.py);
- `external`: an existing stack whose addresses are in AETHER_* env vars (endpoints.py).
Each test gets its own PostgreSQL database, Mongo database name, Kafka topic prefix,
Elasticsearch index prefix and Redis key prefix, so tests never see each other's data.

It also hands out the shared test kit (testkit.py): the session's signing key and an auth peer
serving its JWKS, for the services that verify auth's tokens.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aether_devstack.cli import find_root
from aether_devstack.endpoints import Endpoints
from aether_devstack.fleet import Fleet
from aether_devstack.servers import NativeStack
from aether_devstack.testkit import (
    JwksPeer,
    SigningKey,
    fresh_database,
    new_key,
    serve_jwks,
    unique_name,
)

BACKENDS = ("native", "containers", "external")


def backend_name() -> str:
    name = os.environ.get("AETHER_TEST_BACKEND", "native")
    if name not in BACKENDS:
        raise pytest.UsageError(f"AETHER_TEST_BACKEND must be one of {BACKENDS}, not {name!r}")
    return name


def pytest_configure(config: pytest.Config) -> None:
    backend_name()  # a typo in AETHER_TEST_BACKEND stops the run before any test


@pytest.fixture(scope="session")
def aether_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("aether-servers")


@pytest.fixture(scope="session")
def native_stack(aether_data_dir: Path) -> Iterator[NativeStack | None]:
    """The native servers, when that backend is in use (tests that stop a broker need it)."""
    if backend_name() != "native":
        yield None
        return
    stack = NativeStack(aether_data_dir)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def aether_endpoints(
    native_stack: NativeStack | None, aether_data_dir: Path
) -> Iterator[Endpoints]:
    backend = backend_name()
    if native_stack is not None:
        yield native_stack.endpoints
    elif backend == "containers":
        from aether_devstack.containers import ContainerStack

        stack = ContainerStack(aether_data_dir)
        endpoints = stack.start()
        yield endpoints
        stack.stop()
    else:
        yield Endpoints.from_env()


@pytest.fixture
def controllable_stack(native_stack: NativeStack | None) -> NativeStack:
    """For fault tests that stop and restart a server; only the native backend allows it."""
    if native_stack is None:
        pytest.skip("needs AETHER_TEST_BACKEND=native to stop and restart servers")
    return native_stack


@pytest.fixture
async def pg_dsn(aether_endpoints: Endpoints) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    async with fresh_database(aether_endpoints.postgres_dsn) as dsn:
        yield dsn


@pytest.fixture
def topic_prefix() -> str:
    """Prefix for this test's Kafka topics and consumer groups."""
    return unique_name() + "."


@pytest.fixture
def mongo_db_name() -> str:
    return unique_name("aether_t_")


@pytest.fixture
def index_prefix() -> str:
    return unique_name() + "-"


@pytest.fixture
def redis_prefix() -> str:
    return unique_name() + ":"


@pytest.fixture
def maildir(aether_endpoints: Endpoints) -> Path:
    if not aether_endpoints.maildir:
        pytest.skip("this backend's SMTP server does not expose its mail (AETHER_MAILDIR)")
    return Path(aether_endpoints.maildir)


@pytest.fixture(scope="session")
def aether_platform_env() -> dict[str, dict[str, str]]:
    """Extra environment per service for `aether_platform`; suites override it (e.g. OIDC)."""
    return {}


@pytest.fixture(scope="session")
def aether_platform(
    aether_endpoints: Endpoints,
    aether_platform_env: dict[str, dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> Iterator[Fleet]:
    """Every declared service running as its own process against this session's servers."""
    fleet = Fleet(
        aether_endpoints,
        find_root(pytestconfig.rootpath),
        tmp_path_factory.mktemp("aether-services"),
        extra_env=aether_platform_env,
    )
    fleet.start()
    yield fleet
    fleet.stop()


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    """The key pair auth signs this session's tokens with (Ed25519, like auth's own)."""
    return new_key()


@pytest.fixture(scope="session")
async def jwks_peer(signing_key: SigningKey) -> AsyncIterator[JwksPeer]:
    """An AuthService on a real socket serving `signing_key`'s JWKS (a test peer playing auth)."""
    async with serve_jwks(signing_key) as peer:
        yield peer
