"""Access tokens: EdDSA-signed JWTs (RFC 9068 style) that every service can verify offline.

Header: `alg` EdDSA, `typ` at+jwt, `kid` (the signing key, looked up in the JWKS).
Claims: `iss`, `aud`, `sub` (user id), `jti`, `iat`, `exp`, `sid` (the session = refresh token
family), `plan`, `roles`, `perms`, `email_verified`.

Service tokens (OAuth 2.0 client credentials, `issue_service`) are the same kind of JWT signed
by the same keys: `sub` and `sid` are `service:<client_id>`, `client_id` (RFC 9068) names the
client, `roles` is exactly `["service"]` (what marks it: no user has that role) and `perms` are
the client's configured permissions. No plan, no email.

Verification only accepts EdDSA with a key of ours: `alg: none`, HMAC algorithms (the classic
public-key-as-HMAC-secret confusion), unknown kids, tampered or expired tokens all fail with a
message saying which.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from aether_auth.keys import ALGORITHM, KeyRing
from aether_auth.rbac import permissions_for, roles_for
from aether_auth.repository import UserRecord
from aether_common.errors import Unauthenticated

TOKEN_TYPE = "at+jwt"  # noqa: S105 (a JWT typ)
LEEWAY_S = 30  # clock skew tolerated between replicas and services
REQUIRED_CLAIMS = ["iss", "aud", "sub", "jti", "iat", "exp", "sid"]
# Tokens whose signature and claims were checked: a session presents the same token on every
# call, and PyJWT's decoding is the costly part (its base64 check walks the token byte by byte
# in Python). A hit still checks expiry and that the signing key is still ours.
VERIFIED_CACHE_SIZE = 4096
SERVICE_ROLE = "service"  # aether_common.identity.SERVICE_ROLE: the role only services hold
SERVICE_SUBJECT_PREFIX = "service:"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    sub: str
    jti: str
    sid: str
    iat: int
    exp: int
    plan: str
    roles: tuple[str, ...]
    perms: tuple[str, ...]
    email_verified: bool
    kid: str
    client_id: str = ""  # service tokens only

    @property
    def is_service(self) -> bool:
        return self.sub.startswith(SERVICE_SUBJECT_PREFIX) and SERVICE_ROLE in self.roles

    @classmethod
    def from_payload(cls, payload: dict[str, Any], kid: str) -> AccessClaims:
        return cls(
            sub=str(payload["sub"]),
            jti=str(payload["jti"]),
            sid=str(payload["sid"]),
            iat=int(payload["iat"]),
            exp=int(payload["exp"]),
            plan=str(payload.get("plan", "")),
            roles=tuple(str(r) for r in payload.get("roles", ())),
            perms=tuple(str(p) for p in payload.get("perms", ())),
            email_verified=bool(payload.get("email_verified", False)),
            kid=kid,
            client_id=str(payload.get("client_id", "")),
        )


class AccessTokens:
    def __init__(self, keys: KeyRing, *, issuer: str, audience: str, ttl_s: int) -> None:
        self._keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        # raw token -> its claims; insertion-ordered, the oldest dropped first when full.
        self._verified: dict[str, AccessClaims] = {}

    def issue(
        self, user: UserRecord, session_id: uuid.UUID, *, now: float | None = None
    ) -> tuple[str, AccessClaims]:
        """Sign a token for `user` in session `session_id` (`now` only for tests)."""
        issued = int(time.time() if now is None else now)
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user.id),
            "jti": uuid.uuid4().hex,
            "iat": issued,
            "exp": issued + self.ttl_s,
            "sid": str(session_id),
            "plan": user.plan.value,
            "roles": roles_for(user.role),
            "perms": permissions_for(user.plan, user.role),
            "email_verified": user.email_verified,
        }
        return self._sign(payload)

    def issue_service(
        self, client_id: str, permissions: list[str], *, ttl_s: int, now: float | None = None
    ) -> tuple[str, AccessClaims]:
        """Sign a service token for `client_id` (client credentials), valid `ttl_s` seconds."""
        issued = int(time.time() if now is None else now)
        subject = SERVICE_SUBJECT_PREFIX + client_id
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "client_id": client_id,
            "jti": uuid.uuid4().hex,
            "iat": issued,
            "exp": issued + ttl_s,
            # Verifiers require a session; a client's tokens share one, so revoking the sid
            # `service:<id>` denies every token the client holds.
            "sid": subject,
            "roles": [SERVICE_ROLE],
            "perms": sorted(set(permissions)),
        }
        return self._sign(payload)

    def _sign(self, payload: dict[str, Any]) -> tuple[str, AccessClaims]:
        key = self._keys.signing_key
        token = jwt.encode(
            payload,
            key.private_key,
            algorithm=ALGORITHM,
            headers={"kid": key.kid, "typ": TOKEN_TYPE},
        )
        return token, AccessClaims.from_payload(payload, key.kid)

    async def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; Unauthenticated saying why otherwise."""
        claims = self._verified.get(token)
        if claims is not None:
            if time.time() > claims.exp + LEEWAY_S:
                del self._verified[token]
                raise Unauthenticated("access token expired", code="token_expired")
            if await self._keys.verification_key(claims.kid) is None:
                del self._verified[token]
                raise Unauthenticated("access token signed by an unknown key", code="invalid_token")
            return claims
        claims = await self._verify_signed(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = claims
        return claims

    async def _verify_signed(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthenticated("malformed access token", code="invalid_token") from None
        algorithm = header.get("alg")
        if algorithm != ALGORITHM:
            raise Unauthenticated(
                f"access token algorithm {algorithm!r} is not accepted (expected {ALGORITHM})",
                code="invalid_token",
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("access token has no key id (kid)", code="invalid_token")
        key = await self._keys.verification_key(kid)
        if key is None:
            raise Unauthenticated("access token signed by an unknown key", code="invalid_token")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("access token expired", code="token_expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                "access token signature is invalid", code="invalid_token"
            ) from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            raise Unauthenticated(
                "access token was not issued for this service", code="invalid_token"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(
                f"access token lacks the {exc.claim!r} claim", code="invalid_token"
            ) from None
        except jwt.PyJWTError:
            raise Unauthenticated("invalid access token", code="invalid_token") from None
        if header.get("typ") != TOKEN_TYPE:
            raise Unauthenticated("not an access token", code="invalid_token")
        return AccessClaims.from_payload(payload, kid)
