"""Access tokens as auth issues them: key pairs, claims, signatures."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

# What auth puts in `iss` and `aud` by default (the services' defaults too).
ISSUER = "aether-auth"
AUDIENCE = "aether"
TOKEN_TTL_S = 900


@dataclass(frozen=True)
class SigningKey:
    """A key pair as auth holds it: the private key signs, `jwk` is what the JWKS publishes."""

    kid: str
    alg: str
    private: Ed25519PrivateKey | rsa.RSAPrivateKey
    jwk: dict[str, Any]


def ed25519_key(kid: str | None = None) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = kid or f"ed-{uuid.uuid4().hex[:8]}"
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    return SigningKey(kid, "EdDSA", private, jwk | {"kid": kid, "alg": "EdDSA", "use": "sig"})


def rsa_key(kid: str | None = None) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = kid or f"rsa-{uuid.uuid4().hex[:8]}"
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return SigningKey(kid, "RS256", private, jwk | {"kid": kid, "alg": "RS256", "use": "sig"})


def new_key(alg: str = "EdDSA", kid: str | None = None) -> SigningKey:
    """A fresh key pair: `EdDSA` (what auth signs with) or `RS256`."""
    return ed25519_key(kid) if alg == "EdDSA" else rsa_key(kid)


def access_claims(
    *, issuer: str = ISSUER, audience: str = AUDIENCE, **overrides: Any
) -> dict[str, Any]:
    """The claims of an access token as auth issues them (a free user with a random `sub`);
    an override of None drops that claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": f"user-{uuid.uuid4().hex[:10]}",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + TOKEN_TTL_S,
        "iss": issuer,
        "aud": audience,
        "plan": "free",
        "roles": ["user"],
        "perms": [],
        "sid": uuid.uuid4().hex,
    }
    return {k: v for k, v in (base | overrides).items() if v is not None}


def mint(
    key: SigningKey, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None
) -> str:
    """`claims` signed with `key`, with the headers auth sets (`kid`, `typ: at+jwt`)."""
    return jwt.encode(
        dict(claims),
        key.private,
        algorithm=key.alg,
        headers={"kid": key.kid, "typ": "at+jwt", **(headers or {})},
    )


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying `token`."""
    return (("authorization", f"Bearer {token}"),)


class Callers:
    """Mixin for a suite's handle on a running service: its test users and their call
    metadata, one token per user like logged-in clients (a fresh one when claims are given).
    The handle has `key` (auth's signing key) and `tokens` (user id -> token) fields and
    mints with its own default claims in `token()`."""

    key: SigningKey
    tokens: dict[str, str]

    def token(self, user_id: str, **claims: Any) -> str:
        raise NotImplementedError

    @staticmethod
    def user(name: str = "user") -> str:
        """A fresh user id (what auth puts in `sub`)."""
        return f"{name}-{uuid.uuid4().hex[:10]}"

    def auth(self, user_id: str, **claims: Any) -> tuple[tuple[str, str], ...]:
        """Call metadata for `user_id`."""
        if claims:
            return bearer_metadata(self.token(user_id, **claims))
        token = self.tokens.get(user_id) or self.tokens.setdefault(user_id, self.token(user_id))
        return bearer_metadata(token)

    def admin(self, user_id: str) -> tuple[tuple[str, str], ...]:
        return self.auth(user_id, roles=["admin"], plan="admin")
