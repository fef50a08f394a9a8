"""Access tokens verified locally against auth's JWKS (real keys, a real gRPC peer)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from aether.auth.v1 import auth_pb2
from aether_common.telemetry import configure_telemetry

ME = "/api/auth/me"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def assert_refused(
    gateway: Any,
    token: str,
    error_shape: Callable[..., str],
    *,
    says: str,
    error: str = "invalid_token",
) -> None:
    response = await gateway.get(ME, headers=auth(token))
    detail = error_shape(response, 401, error)
    assert says in detail
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.fixture
def tracing() -> None:
    # The process-wide SDK providers, as __main__ installs them (spans kept in memory here).
    configure_telemetry("gateway-test", span_exporter=InMemorySpanExporter())


async def test_a_valid_token_reaches_auth_with_the_caller_forwarded(
    tracing: None,
    gateway: Any,
    fake_auth: Any,
    token: Callable[..., str],
    make_user: Callable[..., Any],
) -> None:
    fake_auth.answers["GetMe"] = auth_pb2.GetMeResponse(user=make_user("u-42"))
    access = token(sub="u-42")
    trace_id = uuid.uuid4().hex
    incoming = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}

    response = await gateway.get(ME, headers=auth(access) | incoming)

    assert response.status_code == 200, response.text
    assert response.json()["id"] == "u-42"
    (call,) = fake_auth.calls_to("GetMe")
    assert call.metadata["authorization"] == f"Bearer {access}"
    assert call.metadata["x-aether-user-id"] == "u-42"
    assert call.metadata["x-request-id"] == response.headers["X-Request-ID"]
    # The client's trace continues through the gateway into auth.
    assert call.metadata["traceparent"].split("-")[1] == trace_id


async def test_rs256_tokens_verify_too(
    gateway: Any, fake_auth: Any, new_key: Callable[..., Any], mint_token: Callable[..., str]
) -> None:
    key = new_key("RS256")
    fake_auth.jwks.append(key.jwk)

    response = await gateway.get(ME, headers=auth(mint_token(key)))

    assert response.status_code == 200, response.text


async def test_an_expired_token_is_refused(
    gateway: Any, token: Callable[..., str], error_shape: Callable[..., str]
) -> None:
    now = int(time.time())
    expired = token(iat=now - 1000, exp=now - 10)
    await assert_refused(gateway, expired, error_shape, says="expired", error="token_expired")


async def test_a_tampered_token_is_refused(
    gateway: Any, token: Callable[..., str], error_shape: Callable[..., str]
) -> None:
    header, payload, signature = token(plan="free").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["plan"] = "admin"  # the classic: promote yourself, keep the old signature
    forged = ".".join([header, b64(claims), signature])
    await assert_refused(gateway, forged, error_shape, says="signature is invalid")


async def test_alg_none_is_refused(
    gateway: Any, signing_key: Any, error_shape: Callable[..., str]
) -> None:
    now = int(time.time())
    unsigned = (
        b64({"alg": "none", "typ": "JWT", "kid": signing_key.kid})
        + "."
        + b64({"sub": "u-1", "jti": "j", "iat": now, "exp": now + 600, "iss": "x", "aud": "y"})
        + "."
    )
    await assert_refused(gateway, unsigned, error_shape, says="algorithm none is not accepted")


async def test_hs256_signed_with_the_public_key_is_refused(
    gateway: Any, signing_key: Any, error_shape: Callable[..., str]
) -> None:
    # Algorithm confusion: HMAC "signed" with the (public) verification key.
    forged = jwt.encode(
        {"sub": "u-1", "jti": "j", "exp": int(time.time()) + 600},
        signing_key.jwk["x"],
        algorithm="HS256",
        headers={"kid": signing_key.kid},
    )
    await assert_refused(gateway, forged, error_shape, says="algorithm HS256 is not accepted")


async def test_a_token_signed_with_another_key_under_a_known_kid_is_refused(
    gateway: Any,
    signing_key: Any,
    new_key: Callable[..., Any],
    mint_token: Callable[..., str],
    error_shape: Callable[..., str],
) -> None:
    impostor = new_key("EdDSA", kid=signing_key.kid)
    await assert_refused(gateway, mint_token(impostor), error_shape, says="signature is invalid")


async def test_an_algorithm_that_does_not_match_the_key_is_refused(
    gateway: Any,
    fake_auth: Any,
    signing_key: Any,
    new_key: Callable[..., Any],
    error_shape: Callable[..., str],
) -> None:
    rsa = new_key("RS256")
    # RS256 under the kid of an Ed25519 key.
    token = jwt.encode(
        {"sub": "u-1", "jti": "j", "exp": int(time.time()) + 600},
        rsa.private,
        algorithm="RS256",
        headers={"kid": signing_key.kid, "typ": "at+jwt"},
    )
    await assert_refused(gateway, token, error_shape, says="does not match its key")


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"iss": "https://evil.example"}, "unexpected issuer"),
        ({"aud": "another-api"}, "not meant for this API"),
        ({"jti": None}, "lacks the 'jti' claim"),
        ({"sid": None}, "lacks the 'sid' claim"),
        ({"iat": int(time.time()) + 3600}, "not valid yet"),
        ({"roles": "admin"}, "claims are malformed"),
    ],
)
async def test_claims_are_checked(
    gateway: Any,
    signing_key: Any,
    mint_token: Callable[..., str],
    error_shape: Callable[..., str],
    claims: dict[str, Any],
    says: str,
) -> None:
    await assert_refused(gateway, mint_token(signing_key, **claims), error_shape, says=says)


@pytest.mark.parametrize("typ", ["JWT", "refresh+jwt", None])
async def test_only_access_tokens_pass(
    gateway: Any,
    signing_key: Any,
    mint_token: Callable[..., str],
    error_shape: Callable[..., str],
    typ: str | None,
) -> None:
    # An ID token or a JWT refresh token signed with the same key is still not an access token.
    token = mint_token(signing_key, headers={"typ": typ})
    await assert_refused(gateway, token, error_shape, says="not an access token")


async def test_an_unknown_kid_refetches_the_jwks_once(
    gateway: Any,
    fake_auth: Any,
    token: Callable[..., str],
    new_key: Callable[..., Any],
    mint_token: Callable[..., str],
) -> None:
    assert (await gateway.get(ME, headers=auth(token()))).status_code == 200
    fetches = len(fake_auth.calls_to("GetJwks"))
    rotated = new_key("EdDSA")
    fake_auth.jwks.append(rotated.jwk)  # auth rotated its key after we fetched

    response = await gateway.get(ME, headers=auth(mint_token(rotated)))

    assert response.status_code == 200, response.text
    assert len(fake_auth.calls_to("GetJwks")) == fetches + 1


async def test_a_flood_of_random_kids_does_not_hammer_auth(
    gateway: Any,
    fake_auth: Any,
    token: Callable[..., str],
    new_key: Callable[..., Any],
    mint_token: Callable[..., str],
    error_shape: Callable[..., str],
) -> None:
    assert (await gateway.get(ME, headers=auth(token()))).status_code == 200
    fetches = len(fake_auth.calls_to("GetJwks"))
    attacker = new_key("EdDSA")
    forged = [
        mint_token(attacker, headers={"kid": uuid.uuid4().hex}, plan="admin") for _ in range(60)
    ]

    responses = await asyncio.gather(*(gateway.get(ME, headers=auth(t)) for t in forged))

    for response in responses:
        assert "unknown key" in error_shape(response, 401, "invalid_token")
    assert len(fake_auth.calls_to("GetJwks")) <= fetches + 1


@pytest.mark.parametrize("denylist_server", ["shared", "separate"])
async def test_revoked_tokens_are_refused(
    denylist_server: str,
    start_gateway: Any,
    aether_endpoints: Any,
    redis: Redis,
    redis_prefix: str,
    token: Callable[..., str],
    error_shape: Callable[..., str],
) -> None:
    # "shared": denylist and rate limit checked in one script; "separate": a second client (as
    # for a denylist on its own server), so two calls.
    overrides = {"rate_limit_free": 1000}
    if denylist_server == "separate":
        overrides["revocation_redis_url"] = aether_endpoints.redis_url
    gateway = await start_gateway(**overrides)
    denylist = redis_prefix + "auth:revoked:"
    by_jti, by_session, by_user, fresh = (
        token(jti="j-logged-out"),
        token(sid="s-revoked"),
        token(sub="u-reset", iat=int(time.time()) - 60),
        token(sub="u-reset", iat=int(time.time()) + 0),
    )
    # Seen (and cached as verified) before the revocation: must be refused all the same.
    assert (await gateway.get(ME, headers=auth(by_jti))).status_code == 200
    await redis.set(denylist + "jti:j-logged-out", "1", ex=60)
    await redis.set(denylist + "sid:s-revoked", "1", ex=60)
    await redis.set(denylist + "user:u-reset", str(int(time.time()) - 30), ex=60)

    for revoked in (by_jti, by_session, by_user):
        await assert_refused(gateway, revoked, error_shape, says="revoked")
    # Issued after the user's cut-off: fine, and counted against the user's own limit.
    ok = await gateway.get(ME, headers=auth(fresh))
    assert ok.status_code == 200
    assert ok.headers["X-RateLimit-Limit"] == "1000"


async def test_logout_denies_the_token_at_once(
    gateway: Any,
    redis: Redis,
    redis_prefix: str,
    token: Callable[..., str],
    error_shape: Callable[..., str],
) -> None:
    access = token(jti="j-bye")

    assert (await gateway.post("/api/auth/logout", headers=auth(access))).status_code == 204

    await assert_refused(gateway, access, error_shape, says="revoked")
    ttl = await redis.ttl(redis_prefix + "gw:revoked:jti:j-bye")
    assert 0 < ttl <= 901


async def test_no_token_or_a_non_bearer_scheme_is_401(
    gateway: Any, error_shape: Callable[..., str]
) -> None:
    missing = await gateway.get(ME)
    basic = await gateway.get(ME, headers={"Authorization": "Basic dXNlcjpwdw=="})

    assert "authentication required" in error_shape(missing, 401, "unauthenticated")
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="aether"'
    assert "Bearer" in error_shape(basic, 401, "invalid_token")


async def test_tokens_cannot_be_checked_while_auth_was_never_reachable(
    start_gateway: Any, token: Callable[..., str], error_shape: Callable[..., str]
) -> None:
    gateway = await start_gateway(auth_grpc_target="127.0.0.1:1")

    response = await gateway.get(ME, headers=auth(token()))

    assert "auth service is unavailable" in error_shape(response, 503, "unavailable")


async def test_keys_are_served_without_private_material(
    gateway: Any, fake_auth: Any, signing_key: Any, new_key: Callable[..., Any]
) -> None:
    leaked = new_key("EdDSA")
    fake_auth.jwks.append(leaked.jwk | {"d": "c2VjcmV0"})  # a bug at auth must not reach clients

    for path in ("/api/auth/jwks", "/.well-known/jwks.json"):
        response = await gateway.get(path)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "public, max-age=300"
        assert [k["kid"] for k in response.json()["keys"]] == [signing_key.kid]
