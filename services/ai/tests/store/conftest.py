"""The AI service's PostgreSQL stores against the session's real servers (devstack plugin).

Each test gets its own PostgreSQL database (`pg_dsn`, migrated by `PostgresDatabase.start()`)
and Kafka topic prefix. Fixture names start with `store_` so they never clash with the service-level
fixtures of tests/conftest.py. Test modules cannot import each other here, so shared helpers
live on the `store_kit` fixture (most of them the devstack test kit's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from importlib.resources import files
from typing import Any

import pytest

from aether_common.errors import AetherError
from aether_common.postgres import PostgresDatabase
from aether_devstack.testkit import eventually, failure, read_topic


@pytest.fixture
async def store_db(pg_dsn: str) -> AsyncIterator[PostgresDatabase]:
    db = PostgresDatabase(
        pg_dsn, service="ai", migrations=files("aether_ai") / "migrations", max_size=5
    )
    await db.start()
    try:
        yield db
    finally:
        await db.stop()


def percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


@dataclass(frozen=True)
class StoreKit:
    failure: Callable[[Awaitable[Any]], Awaitable[AetherError]]
    eventually: Callable[..., Awaitable[Any]]
    read_topic: Callable[..., Awaitable[list[Any]]]
    percentile_cont: Callable[[list[float], float], float]


@pytest.fixture
def store_kit() -> StoreKit:
    return StoreKit(failure, partial(eventually, within=20.0), read_topic, percentile_cont)
