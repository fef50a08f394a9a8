"""Access tokens: claims, JWKS, key rotation, and every kind of bad token refused clearly."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aether.auth.v1 import auth_pb2
from aether_auth import repository
from aether_auth.tokens import LEEWAY_S


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def _user_and_token(auth: Any, kit: Any) -> tuple[str, str]:
    email = kit.unique_email()
    await auth.register(email)
    return email, (await auth.tokens(email)).access_token


async def test_access_token_claims_and_header(auth: Any, kit: Any) -> None:
    _, token = await _user_and_token(auth, kit)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    assert header["kid"]
    # Anyone with the JWKS can verify it: what the gateway and other services do.
    jwks = json.loads((await auth.stub.GetJwks(auth_pb2.GetJwksRequest())).jwks_json)
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience="aether", issuer="aether-auth")
    assert set(claims) >= {
        "sub", "jti", "iat", "exp", "iss", "aud", "sid", "plan", "roles", "perms",
        "email_verified",
    }  # fmt: skip
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert claims["plan"] == "free"
    assert claims["roles"] == ["user"]
    assert "chat:write" in claims["perms"]
    assert claims["email_verified"] is False
    uuid.UUID(claims["sub"])
    uuid.UUID(claims["sid"])
    # No private material in the JWKS.
    assert all("d" not in k for k in jwks["keys"])
    assert {k["kty"] for k in jwks["keys"]} == {"OKP"}


@pytest.mark.parametrize(
    "forge",
    ["tampered", "alg_none", "hs256_with_public_key", "expired", "wrong_key", "unknown_kid",
     "wrong_audience", "not_a_jwt", "no_kid"],
)  # fmt: skip
async def test_bad_tokens_are_unauthenticated_with_a_clear_message(
    auth: Any, kit: Any, forge: str
) -> None:
    email, good = await _user_and_token(auth, kit)
    header = jwt.get_unverified_header(good)
    claims = jwt.decode(good, options={"verify_signature": False})
    head, payload, signature = good.split(".")
    stranger = Ed25519PrivateKey.generate()
    expected = {
        "tampered": "signature is invalid",
        "alg_none": "algorithm 'none' is not accepted",
        "hs256_with_public_key": "algorithm 'HS256' is not accepted",
        "expired": "access token expired",
        "wrong_key": "signature is invalid",
        "unknown_kid": "unknown key",
        "wrong_audience": "not issued for this service",
        "not_a_jwt": "malformed access token",
        "no_kid": "no key id",
    }[forge]
    if forge == "tampered":
        token = f"{head}.{_b64(claims | {'plan': 'admin', 'perms': ['users:admin']})}.{signature}"
    elif forge == "alg_none":
        token = f"{_b64({'alg': 'none', 'typ': 'at+jwt', 'kid': header['kid']})}.{payload}."
    elif forge == "hs256_with_public_key":
        jwks = json.loads((await auth.stub.GetJwks(auth_pb2.GetJwksRequest())).jwks_json)
        secret = jwks["keys"][0]["x"].encode()
        forged_head = _b64({"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]})
        mac = hmac.new(secret, f"{forged_head}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{forged_head}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    elif forge == "expired":
        user = await _record(auth, email)
        token, _ = auth.app.tokens.issue(user, uuid.UUID(claims["sid"]), now=time.time() - 3600)
    elif forge == "wrong_key":
        token = jwt.encode(claims, stranger, algorithm="EdDSA", headers=header)
    elif forge == "unknown_kid":
        token = jwt.encode(claims, stranger, algorithm="EdDSA", headers=header | {"kid": "x1"})
    elif forge == "wrong_audience":
        user = await _record(auth, email)
        auth.app.tokens.audience = "elsewhere"
        token, _ = auth.app.tokens.issue(user, uuid.UUID(claims["sid"]))
        auth.app.tokens.audience = "aether"
    elif forge == "no_kid":
        token = jwt.encode(claims, stranger, algorithm="EdDSA", headers={"typ": "at+jwt"})
    else:
        token = "definitely.not.a-jwt"
    error = await kit.failure(auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(token)))
    assert error.http_status == 401, error
    assert expected in error.detail, error.detail


async def test_a_malformed_authorization_header_is_refused(auth: Any, kit: Any) -> None:
    error = await kit.failure(
        auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=(("authorization", "Basic abc"),))
    )
    assert error.http_status == 401
    assert "Bearer" in error.detail


async def test_key_rotation_old_tokens_still_verify_and_jwks_lists_both(
    auth: Any, kit: Any
) -> None:
    email, old_token = await _user_and_token(auth, kit)
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    new_kid = await auth.app.keys.rotate_now()
    assert new_kid != old_kid
    new_token = (await auth.tokens(email)).access_token
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid  # the new key signs
    for token in (old_token, new_token):  # the old key still verifies
        me = await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(token))
        assert me.user.email == email
    jwks = json.loads((await auth.stub.GetJwks(auth_pb2.GetJwksRequest())).jwks_json)
    assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]

    rows = await auth.sql("SELECT kid, retired_at, verify_until FROM signing_keys ORDER BY kid")
    retired = {r["kid"]: r for r in rows}[old_kid]
    assert retired["retired_at"] is not None
    # The old key verifies for one access-token lifetime plus leeway, then leaves the JWKS.
    window = (retired["verify_until"] - retired["retired_at"]).total_seconds()
    assert window == 15 * 60 + 5 * 60
    await auth.sql("UPDATE signing_keys SET verify_until = now() WHERE kid = $1", old_kid)
    await auth.app.keys.reload()
    jwks = json.loads((await auth.stub.GetJwks(auth_pb2.GetJwksRequest())).jwks_json)
    assert [k["kid"] for k in jwks["keys"]] == [new_kid]
    gone = await kit.failure(
        auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(old_token))
    )
    assert gone.http_status == 401
    assert "unknown key" in gone.detail


async def test_a_replica_learns_another_replicas_new_key(start_auth: Any, kit: Any) -> None:
    first = await start_auth()
    # A second replica on the same database and Redis (its own gRPC port).
    second = await start_auth()
    email, _ = await _user_and_token(first, kit)
    await first.app.keys.rotate_now()
    token = (await first.tokens(email)).access_token
    # The second replica has never seen this kid: it reloads the keys and accepts it.
    me = await second.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(token))
    assert me.user.email == email
    # Its scheduled upkeep switches it to the new signing key too.
    await second.app.housekeeper.run_once()
    assert second.app.keys.signing_key.kid == first.app.keys.signing_key.kid


async def test_scheduled_rotation(start_auth: Any) -> None:
    auth = await start_auth(key_rotation_interval_s=3600)
    kid = auth.app.keys.signing_key.kid
    await auth.app.housekeeper.run_once()
    assert auth.app.keys.signing_key.kid == kid  # not due yet
    await auth.sql("UPDATE signing_keys SET created_at = now() - interval '2 hours'")
    await auth.app.housekeeper.run_once()
    assert auth.app.keys.signing_key.kid != kid


async def test_private_keys_are_encrypted_at_rest(auth: Any) -> None:
    rows = await auth.sql("SELECT kid, public_jwk, private_key_enc FROM signing_keys")
    assert len(rows) == 1
    raw = auth.app.keys.signing_key.private_key.private_bytes_raw()
    assert raw not in bytes(rows[0]["private_key_enc"])
    # Another secret cannot read them: the service refuses to start rather than sign wrongly.
    from aether_auth.crypto import SecretBoxError, new_box

    with pytest.raises(SecretBoxError, match="AUTH_KEY_ENCRYPTION_SECRET"):
        new_box("another secret").decrypt(
            "signing-key", bytes(rows[0]["private_key_enc"]), rows[0]["kid"].encode()
        )


async def test_jwks_over_http(auth: Any) -> None:
    app = auth.app.http_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://auth") as client:
        response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.json() == auth.app.keys.jwks()
    assert "max-age" in response.headers["cache-control"]


async def _record(auth: Any, email: str) -> repository.UserRecord:
    async with auth.app.database.pool.acquire() as conn:
        user = await repository.get_user_by_email(conn, email)
    assert user is not None
    return user


async def test_a_token_verified_before_is_refused_once_it_expires(auth: Any, kit: Any) -> None:
    email, token = await _user_and_token(auth, kit)
    user = await _record(auth, email)
    sid = uuid.UUID(jwt.decode(token, options={"verify_signature": False})["sid"])
    # Valid for one more second, leeway included; verifying it once keeps it in the cache.
    tokens = auth.app.tokens
    short, _ = tokens.issue(user, sid, now=time.time() - tokens.ttl_s - LEEWAY_S + 1)
    me = await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(short))
    assert me.user.email == email

    await asyncio.sleep(1.5)

    error = await kit.failure(auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(short)))
    assert error.http_status == 401
    assert "expired" in error.detail
