"""TokenVerifier's cache of verified tokens: it skips only the signature check, never expiry,
key withdrawal or revocation."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from aether_common.access_tokens import JwksCache, JwksTokenResolver, TokenRejected, TokenVerifier

ISSUER, AUDIENCE = "aether-auth", "aether"


class Keys:
    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.kid = f"ed-{uuid.uuid4().hex[:8]}"
        self.withdrawn = False

    def jwks(self) -> str:
        if self.withdrawn:
            return json.dumps({"keys": []})
        jwk = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
        return json.dumps({"keys": [jwk | {"kid": self.kid, "alg": "EdDSA", "use": "sig"}]})

    def mint(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "sub": "user-1",
            "jti": uuid.uuid4().hex,
            "sid": "session-1",
            "iat": now,
            "exp": now + 900,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "plan": "premium",
        } | overrides
        headers = {"kid": self.kid, "typ": "at+jwt"}
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers=headers)


class Denylist:
    def __init__(self) -> None:
        self.jtis: set[str] = set()
        self.checks = 0

    async def revoked_reason(self, jti: str, sid: str, sub: str, iat: int) -> str | None:
        self.checks += 1
        return "revoked" if jti in self.jtis else None


def verifier(keys: Keys, denylist: Denylist | None = None) -> TokenVerifier:
    async def fetch() -> str:
        return keys.jwks()

    jwks = JwksCache(fetch, max_age_s=300, refetch_interval_s=0)
    return TokenVerifier(jwks, denylist, issuer=ISSUER, audience=AUDIENCE, leeway_s=0)


async def test_a_token_seen_before_skips_the_signature_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = Keys()
    check = verifier(keys)
    token = keys.mint()
    first = await check.verify(token)

    def no_decode(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("signature checked again")

    monkeypatch.setattr(jwt, "decode", no_decode)  # the module access_tokens calls
    again = await check.verify(token)

    assert again == first
    assert again.plan == "premium"


async def test_a_cached_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys()
    check = verifier(keys)
    token = keys.mint()
    await check.verify(token)

    later = time.time() + 901
    monkeypatch.setattr(time, "time", lambda: later)  # the module access_tokens reads

    with pytest.raises(TokenRejected) as refused:
        await check.verify(token)
    assert refused.value.reason == "expired"


async def test_a_cached_token_fails_once_its_key_is_withdrawn() -> None:
    keys = Keys()
    check = verifier(keys)
    token = keys.mint()
    await check.verify(token)

    keys.withdrawn = True
    check.jwks.max_age_s = 0  # the next lookup refreshes the key set

    with pytest.raises(TokenRejected) as refused:
        await check.verify(token)
    assert refused.value.reason == "unknown_kid"


async def test_revocation_is_checked_on_every_request() -> None:
    keys, denylist = Keys(), Denylist()
    check = verifier(keys, denylist)
    token = keys.mint(jti="jti-1")
    await check.verify(token)
    await check.verify(token)

    denylist.jtis.add("jti-1")

    with pytest.raises(TokenRejected) as refused:
        await check.verify(token)
    assert refused.value.reason == "revoked"
    assert denylist.checks == 3


async def test_the_grpc_resolver_turns_a_token_into_the_caller() -> None:
    keys = Keys()
    resolver = JwksTokenResolver(verifier(keys))
    token = keys.mint(sub="user-9", roles=["user"], perms=["chat:write"])

    caller = await resolver.resolve({"authorization": f"Bearer {token}"})
    anonymous = await resolver.resolve({})

    assert caller.user_id == "user-9"
    assert caller.permissions == frozenset({"chat:write"})
    assert not anonymous.is_authenticated
    with pytest.raises(TokenRejected):
        await resolver.resolve({"authorization": "Bearer not.a.token"})
