"""Pure pieces: the JWKS cache's fetch policy (with a fake clock) and proto -> JSON conversion."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from aether.auth.v1 import auth_pb2
from aether_common.access_tokens import JwksCache, TokenRejected, normalise_plan, parse_jwks
from aether_common.errors import Unavailable
from aether_gateway.ai.convert import rfc3339
from aether_gateway.auth import convert


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Auth:
    """A JWKS source that counts fetches and can be made to fail."""

    def __init__(self, jwks: list[dict[str, Any]]) -> None:
        self.jwks = jwks
        self.fetches = 0
        self.down = False

    async def fetch(self) -> str:
        self.fetches += 1
        await asyncio.sleep(0.01)  # let concurrent callers pile up
        if self.down:
            raise Unavailable("auth down")
        return json.dumps({"keys": self.jwks})


@pytest.fixture
def setup(new_key: Callable[..., Any]) -> tuple[Auth, Clock, JwksCache, Any]:
    key = new_key("EdDSA")
    source, clock = Auth([key.jwk]), Clock()
    cache = JwksCache(source.fetch, max_age_s=300, refetch_interval_s=10, clock=clock)
    return source, clock, cache, key


async def test_concurrent_first_lookups_share_one_fetch(setup: Any) -> None:
    source, _, cache, key = setup

    found = await asyncio.gather(*(cache.key(key.kid) for _ in range(20)))

    assert {k.key_id for k in found} == {key.kid}
    assert source.fetches == 1


async def test_old_keys_are_refreshed_and_kept_when_auth_is_down(setup: Any) -> None:
    source, clock, cache, key = setup
    await cache.key(key.kid)
    source.down = True
    clock.now += 301

    assert (await cache.key(key.kid)).key_id == key.kid  # stale but usable
    assert (await cache.key(key.kid)).key_id == key.kid  # no retry within the interval
    assert source.fetches == 2
    clock.now += 10
    source.down = False
    await cache.key(key.kid)
    assert source.fetches == 3


async def test_unknown_kids_refetch_at_most_once_per_interval(
    setup: Any, new_key: Callable[..., Any]
) -> None:
    source, clock, cache, key = setup
    await cache.key(key.kid)

    for _ in range(5):
        with pytest.raises(TokenRejected, match="unknown key"):
            await cache.key("nope")
    assert source.fetches == 2
    rotated = new_key("EdDSA")
    source.jwks.append(rotated.jwk)
    with pytest.raises(TokenRejected):
        await cache.key(rotated.kid)  # still inside the interval
    clock.now += 10
    assert (await cache.key(rotated.kid)).key_id == rotated.kid
    assert source.fetches == 3


async def test_no_keys_and_auth_down_is_unavailable_and_retried_gently(setup: Any) -> None:
    source, clock, cache, key = setup
    source.down = True

    for _ in range(3):
        with pytest.raises(Unavailable, match="auth service is unavailable"):
            await cache.key(key.kid)
    assert source.fetches == 1
    clock.now += 1
    source.down = False
    assert (await cache.key(key.kid)).key_id == key.kid


def test_jwks_parsing_keeps_only_public_signing_keys(new_key: Callable[..., Any]) -> None:
    good, rsa = new_key("EdDSA"), new_key("RS256")
    document = {
        "keys": [
            good.jwk,
            rsa.jwk,
            new_key("EdDSA").jwk | {"d": "c2VjcmV0"},
            new_key("EdDSA").jwk | {"use": "enc"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},  # no kid
        ]
    }

    keys, public = parse_jwks(json.dumps(document))

    assert set(keys) == {good.kid, rsa.kid}
    assert [k["kid"] for k in public["keys"]] == [good.kid, rsa.kid]


@pytest.mark.parametrize(
    ("raw", "plan"),
    [("free", "free"), ("PLAN_PREMIUM", "premium"), (" Admin ", "admin"), ("", "free")],
)
def test_plan_claims_are_normalised(raw: str, plan: str) -> None:
    assert normalise_plan(raw) == plan


def test_users_convert_to_snake_case_json() -> None:
    created = Timestamp()
    created.FromJsonString("2026-03-01T12:30:00Z")
    user = auth_pb2.User(
        id="u-1",
        plan=auth_pb2.PLAN_PREMIUM,
        role=auth_pb2.ROLE_MODERATOR,
        created_time=created,
    )

    out = convert.user(user).model_dump()

    assert out["plan"] == "premium"
    assert out["role"] == "moderator"
    assert out["created_time"] == "2026-03-01T12:30:00.000000Z"
    assert convert.plan_name(99) == "unknown"
    assert convert.role_name(auth_pb2.ROLE_UNSPECIFIED) == ""
    assert convert.plan_value("admin") == auth_pb2.PLAN_ADMIN
    assert convert.role_value(None) == auth_pb2.ROLE_UNSPECIFIED


@pytest.mark.parametrize(
    "seconds",
    [-6_311_433_600, -1, 0, 1, 59, 86_399, 86_400, 951_782_400, 1_704_067_261,
     4_102_444_799, 253_402_300_799],
)  # fmt: skip
@pytest.mark.parametrize("nanos", [0, 999, 1000, 123_456_789, 999_999_999])
def test_rfc3339_matches_datetime_formatting(seconds: int, nanos: int) -> None:
    """The fast formatter writes what ToDatetime + strftime wrote (1770, leap days, midnight,
    the epoch, 9999), truncating nanoseconds to microseconds as ToDatetime does."""
    value = Timestamp(seconds=seconds, nanos=nanos)
    assert rfc3339(value) == f"{value.ToDatetime():%Y-%m-%dT%H:%M:%S.%f}Z"


def test_rfc3339_pads_years_before_1000() -> None:
    """RFC 3339 years have four digits; strftime's %Y on glibc wrote year 1 as `1`."""
    assert rfc3339(Timestamp(seconds=-62_135_596_800)) == "0001-01-01T00:00:00.000000Z"
