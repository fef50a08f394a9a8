"""pytest plugin: session-scoped real servers and per-test isolation.

`AETHER_TEST_BACKEND` picks where the servers come from:
- `native` (default): start them here as processes on free ports (servers.py);
- `containers`: testcontainers, when a Docker engine is reachable (containers.py);
- `external`: an existing stack whose addresses are in AETHER_* env vars (endpoints.py).
Each test gets its own PostgreSQL database, Mongo database name, Kafka topic prefix,
Elasticsearch index prefix and Redis key prefix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aether_devstack.cli import find_root
from aether_devstack.endpoints import Endpoints
from aether_devstack.fleet import Fleet
from aether_devstack.servers import NativeStack

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


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pg_dsn(aether_endpoints: Endpoints) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    import asyncpg

    name = unique_name("aether_t_")
    admin = await asyncpg.connect(aether_endpoints.postgres_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = aether_endpoints.postgres_dsn.rpartition("/")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(aether_endpoints.postgres_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


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
