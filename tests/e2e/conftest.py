"""Black-box suites through the gateway only.

Every address comes from the environment (`AETHER_GATEWAY_URL`, default the local platform's
http://127.0.0.1:8080), so the same suites run against `make dev` or a cluster. Suites arrive
with the gateway (issue 3).
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def gateway_url() -> str:
    return os.environ.get("AETHER_GATEWAY_URL", "http://127.0.0.1:8080").rstrip("/")
