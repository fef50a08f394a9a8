"""The gateway's own Prometheus metrics (RED per route comes from aether_common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

RATE_LIMITED = Counter(
    "aether_gateway_rate_limited_total", "Requests refused with 429, by plan", ["plan"]
)
REDIS_FAIL_OPEN = Counter(
    "aether_gateway_redis_fail_open_total",
    "Redis operations skipped or failed, so the gateway went on without them",
    ["operation"],
)
PROFILE_CACHE = Counter(
    "aether_gateway_profile_cache_total", "Profile cache lookups, by outcome", ["outcome"]
)
