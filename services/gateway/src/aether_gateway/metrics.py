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
TOKENS_REJECTED = Counter(
    "aether_gateway_tokens_rejected_total", "Access tokens refused, by reason", ["reason"]
)
JWKS_FETCHES = Counter(
    "aether_gateway_jwks_fetches_total",
    "JWKS fetches from auth, by trigger and outcome",
    ["trigger", "outcome"],
)
PROFILE_CACHE = Counter(
    "aether_gateway_profile_cache_total", "Profile cache lookups, by outcome", ["outcome"]
)
