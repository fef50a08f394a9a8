"""Per-plan rate limits in real Redis: exact at the limit, under concurrency and across replicas."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from aether_common.redis_pipeline import AutoPipeline
from aether_gateway.rate_limit import RateLimiter, RatePolicy, ip_bucket
from aether_gateway.redis_fail_open import RedisGuard

# Served from the gateway's JWKS cache: no upstream call per request, so only the limiter counts.
ROUTE = "/api/auth/jwks"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fail_open_count(operation: str) -> float:
    value = REGISTRY.get_sample_value(
        "aether_gateway_redis_fail_open_total", {"operation": operation}
    )
    return value or 0.0


async def test_the_61st_request_of_a_free_user_in_a_minute_is_refused(
    gateway: Any, token: Callable[..., str]
) -> None:
    headers = auth(token(plan="free"))
    for i in range(60):
        response = await gateway.get(ROUTE, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["X-RateLimit-Limit"] == "60"
        assert response.headers["X-RateLimit-Remaining"] == str(59 - i)
        assert "Retry-After" not in response.headers

    refused = await gateway.get(ROUTE, headers=headers)

    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert refused.headers["X-RateLimit-Limit"] == "60"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.json() == {
        "error": "rate_limited",
        "detail": f"Rate limit exceeded. Try again in {retry_after} seconds.",
        "status_code": 429,
    }
    assert refused.headers["X-Request-ID"]  # still inside the request-id middleware


async def test_200_concurrent_requests_admit_exactly_the_limit(
    gateway: Any, token: Callable[..., str]
) -> None:
    headers = auth(token(plan="free"))

    responses = await asyncio.gather(*(gateway.get(ROUTE, headers=headers) for _ in range(200)))

    assert Counter(r.status_code for r in responses) == {200: 60, 429: 140}


async def test_replicas_sharing_redis_never_admit_more_than_the_limit(
    redis_url: str, redis_prefix: str, redis: Redis
) -> None:
    # Four "gateway replicas", each with its own connection pool, hammer one user's window.
    clients = [Redis.from_url(redis_url) for _ in range(4)]
    policy = RatePolicy({"free": 60}, anonymous_limit=60)
    limiters = [
        RateLimiter(AutoPipeline(c), RedisGuard(), policy, prefix=redis_prefix, window_s=60)
        for c in clients
    ]
    try:
        decisions = await asyncio.gather(
            *(limiters[i % 4].check("user-x", "free", "192.0.2.1") for i in range(200))
        )
    finally:
        for client in clients:
            await client.aclose()

    admitted = [d for d in decisions if d is not None and d.allowed]
    assert len(admitted) == 60
    assert sorted(d.remaining for d in admitted) == list(range(60))
    assert await redis.zcard(f"{redis_prefix}rl:user:user-x") == 60


async def test_premium_users_get_300_a_minute(gateway: Any, token: Callable[..., str]) -> None:
    headers = auth(token(plan="premium"))

    responses = await asyncio.gather(*(gateway.get(ROUTE, headers=headers) for _ in range(320)))

    assert Counter(r.status_code for r in responses) == {200: 300, 429: 20}
    assert {r.headers["X-RateLimit-Limit"] for r in responses} == {"300"}


async def test_admins_are_not_limited(gateway: Any, token: Callable[..., str]) -> None:
    headers = auth(token(plan="admin", roles=["admin"]))

    responses = await asyncio.gather(*(gateway.get(ROUTE, headers=headers) for _ in range(150)))

    assert {r.status_code for r in responses} == {200}
    assert all("X-RateLimit-Limit" not in r.headers for r in responses)


async def test_the_unlimited_permission_lifts_the_limit(
    start_gateway: Any, token: Callable[..., str]
) -> None:
    gateway = await start_gateway(rate_limit_free=1)
    headers = auth(token(plan="free", perms=["ratelimit:unlimited"]))

    statuses = {(await gateway.get(ROUTE, headers=headers)).status_code for _ in range(5)}

    assert statuses == {200}


async def test_unknown_plans_get_the_free_limit(
    start_gateway: Any, token: Callable[..., str]
) -> None:
    gateway = await start_gateway(rate_limit_free=2)
    headers = auth(token(plan="platinum"))

    statuses = [(await gateway.get(ROUTE, headers=headers)).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


async def test_limits_are_configurable_per_plan(
    start_gateway: Any, token: Callable[..., str]
) -> None:
    gateway = await start_gateway(rate_limit_free=3, rate_limit_premium=5, rate_limit_admin=4)

    for plan, limit in (("free", 3), ("premium", 5), ("admin", 4)):
        headers = auth(token(plan=plan))
        statuses = [
            (await gateway.get(ROUTE, headers=headers)).status_code for _ in range(limit + 1)
        ]
        assert statuses == [200] * limit + [429], plan


async def test_anonymous_callers_are_limited_per_ip(
    start_gateway: Any, token: Callable[..., str]
) -> None:
    first = await start_gateway(client_ip="198.51.100.1", rate_limit_anonymous=3)
    second = await start_gateway(client_ip="198.51.100.2", rate_limit_anonymous=3)

    from_first = [(await first.get(ROUTE)).status_code for _ in range(4)]
    from_second = [(await second.get(ROUTE)).status_code for _ in range(3)]
    # A signed-in user behind the exhausted IP has their own budget...
    as_user = await first.get(ROUTE, headers=auth(token()))
    # ...but a token that does not verify is no way around the IP's limit.
    expired = await first.get(ROUTE, headers=auth(token(exp=1_000_000)))

    assert from_first == [200, 200, 200, 429]
    assert from_second == [200, 200, 200]
    assert as_user.status_code == 200
    assert expired.status_code == 429


async def test_unknown_routes_count_too_but_probes_do_not(start_gateway: Any) -> None:
    gateway = await start_gateway(rate_limit_anonymous=1)

    assert (await gateway.get("/no/such/route")).status_code == 404
    assert (await gateway.get("/no/such/route")).status_code == 429
    for _ in range(5):
        assert (await gateway.get("/health")).status_code == 200
        assert (await gateway.get("/healthz")).status_code == 200


async def test_the_window_slides(start_gateway: Any, token: Callable[..., str]) -> None:
    gateway = await start_gateway(rate_limit_free=2, rate_limit_window_s=1)
    headers = auth(token())

    statuses = [(await gateway.get(ROUTE, headers=headers)).status_code for _ in range(3)]
    refused = await gateway.get(ROUTE, headers=headers)
    await asyncio.sleep(1.1)
    again = await gateway.get(ROUTE, headers=headers)

    assert statuses == [200, 200, 429]
    assert refused.headers["Retry-After"] == "1"
    assert again.status_code == 200


async def test_redis_outage_fails_open_with_a_metric(
    start_gateway: Any, token: Callable[..., str]
) -> None:
    # Nothing listens on port 1: every Redis call fails at once.
    gateway = await start_gateway(redis_url="redis://127.0.0.1:1/0", rate_limit_free=1)
    # Denylist and rate limit are one Redis call per request (revoked_or_limited.py).
    before = fail_open_count("access_check")

    responses = [await gateway.get(ROUTE, headers=auth(token())) for _ in range(3)]
    me = await gateway.get("/api/auth/me", headers=auth(token()))

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all("X-RateLimit-Limit" not in r.headers for r in responses)
    assert me.status_code == 200  # denylist and profile cache fail open too
    assert fail_open_count("access_check") >= before + 4


async def test_rate_limit_can_be_switched_off(start_gateway: Any) -> None:
    gateway = await start_gateway(rate_limit_enabled=False, rate_limit_anonymous=1)

    statuses = {(await gateway.get(ROUTE)).status_code for _ in range(3)}

    assert statuses == {200}


@pytest.mark.parametrize(
    ("ip", "bucket"),
    [
        ("192.0.2.10", "192.0.2.10"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.10", "192.0.2.10"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_ipv6_clients_are_limited_per_64(ip: str, bucket: str) -> None:
    assert ip_bucket(ip) == bucket
