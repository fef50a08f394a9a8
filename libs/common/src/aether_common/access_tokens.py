"""Access tokens verified locally: auth's JWKS (fetched over gRPC and cached) + a denylist.

Shared by the gateway (every request) and the services (`JwksTokenResolver`, for gRPC), so a
service never trusts the gateway alone.

What a token must satisfy (anything else is a 401 saying why):
- algorithm EdDSA or RS256 only, and the one its key is for: never `none`, never HS* (an HS
  token "signed" with a public key is the classic algorithm-confusion attack);
- a `kid` the JWKS has; an unknown kid refetches the JWKS, at most once per
  `refetch_interval_s`, so a flood of random kids cannot hammer auth;
- header `typ` at+jwt (RFC 9068), so no other kind of JWT passes for an access token;
- signature, `exp` (with a small leeway), `iat`, `iss`, `aud`; `sub`, `jti`, `sid` present;
- not revoked, when a `RevocationCheck` is given (the gateway's Redis denylist);
- not a service token, when `refuse_service_tokens` (the gateway: services' own tokens are for
  service-to-service calls, never for a public route or socket).
When no key could ever be fetched (auth down since start) the answer is 503, not 401: the
client's token may be fine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
from jwt import PyJWK
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aether_common.errors import AetherError, Unauthenticated, Unavailable
from aether_common.identity import (
    ANONYMOUS,
    SERVICE_ROLE,
    SERVICE_SUBJECT_PREFIX,
    CallerIdentity,
    bearer_token,
)
from aether_common.logging import get_logger
from aether_common.metrics import JWKS_FETCHES, TOKENS_REJECTED

ALLOWED_ALGORITHMS = frozenset({"EdDSA", "RS256"})
MAX_TOKEN_CHARS = 8192
MAX_KEYS = 32
# With no keys at all, how often a request may try to fetch them (auth down since start).
NO_KEYS_RETRY_S = 1.0
AT_JWT = "at+jwt"  # RFC 9068's header typ for access tokens
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti", "sid"]
# Tokens whose signature and claims were checked, kept until they expire: a client presents the
# same token on every request for its whole life, and the signature check is the costly part.
VERIFIED_CACHE_SIZE = 4096

log = get_logger(__name__)


class RevocationCheck(Protocol):
    async def revoked_reason(self, jti: str, sid: str, sub: str, iat: int) -> str | None:
        """Why the token is revoked (a metric label), or None."""
        ...


class TokenRejected(Unauthenticated):
    """A 401 whose `reason` is a bounded metric label and whose detail the client may read."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, code="token_expired" if reason == "expired" else "invalid_token")
        self.reason = reason

    def http_headers(self) -> dict[str, str]:
        # RFC 6750: tells clients (and their libraries) to refresh or re-authenticate.
        return {"WWW-Authenticate": 'Bearer realm="aether", error="invalid_token"'}


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A verified access token's claims (the raw token is kept to forward, never logged)."""

    subject: str
    jti: str
    issued_at: int
    expires_at: int
    session_id: str
    plan: str
    roles: frozenset[str]
    permissions: frozenset[str]
    email_verified: bool
    raw: str = field(repr=False)


class _Claims(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sub: str = Field(min_length=1, max_length=128)
    jti: str = Field(min_length=1, max_length=128)
    iat: int
    exp: int
    sid: str = Field(min_length=1, max_length=128)
    plan: str = Field(default="free", max_length=32)
    roles: list[str] = Field(default_factory=list, max_length=64)
    perms: list[str] = Field(default_factory=list, max_length=256)
    email_verified: bool = False


def normalise_plan(plan: str) -> str:
    """`PLAN_PREMIUM`, `premium` -> `premium`."""
    plan = plan.strip().lower()
    return plan.removeprefix("plan_") or "free"


# -- JWKS --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _KeySet:
    keys: Mapping[str, PyJWK]
    document: dict[str, Any]  # the accepted public keys, as served at /api/auth/jwks
    fetched_at: float


def parse_jwks(text: str) -> tuple[dict[str, PyJWK], dict[str, Any]]:
    """The usable signing keys of a JWKS document, by kid (others skipped with a log line)."""
    data = json.loads(text)
    raw_keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(raw_keys, list):
        raise ValueError("JWKS document has no 'keys' list")
    keys: dict[str, PyJWK] = {}
    public: list[dict[str, Any]] = []
    for entry in raw_keys[:MAX_KEYS]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            log.warning("jwks: key without kid skipped")
            continue
        if "d" in entry or entry.get("use", "sig") != "sig":
            log.error("jwks: private or non-signing key skipped", kid=entry["kid"])
            continue
        try:
            key = PyJWK(entry)
        except jwt.PyJWTError as exc:
            log.warning("jwks: unusable key skipped", kid=entry["kid"], error=str(exc))
            continue
        if key.algorithm_name not in ALLOWED_ALGORITHMS:
            log.warning(
                "jwks: key algorithm not accepted", kid=entry["kid"], alg=key.algorithm_name
            )
            continue
        keys[entry["kid"]] = key
        public.append(entry)
    return keys, {"keys": public}


class JwksCache:
    """auth's signing keys: fetched on first use, refreshed when old, refetched on an unknown
    kid at most once per `refetch_interval_s`; one fetch at a time (concurrent callers share it)."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[str]],
        *,
        max_age_s: float = 300.0,
        refetch_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.max_age_s = max_age_s
        self.refetch_interval_s = refetch_interval_s
        self._clock = clock
        self._set: _KeySet | None = None
        self._lock = asyncio.Lock()
        self._last_attempt = float("-inf")
        self._last_unknown_kid_fetch = float("-inf")

    async def key(self, kid: str) -> PyJWK:
        keyset = await self._current()
        if kid in keyset.keys:
            return keyset.keys[kid]
        # Perhaps auth rotated keys since we fetched: look again, but not on every request.
        if self._clock() - self._last_unknown_kid_fetch >= self.refetch_interval_s:
            self._last_unknown_kid_fetch = self._clock()
            keyset = await self._refresh("unknown_kid", seen_at=keyset.fetched_at)
        if kid in keyset.keys:
            return keyset.keys[kid]
        raise TokenRejected("unknown_kid", "access token is signed with an unknown key")

    async def document(self) -> dict[str, Any]:
        return (await self._current()).document

    async def prefetch(self) -> bool:
        try:
            await self._current()
        except AetherError:
            return False
        return True

    async def _current(self) -> _KeySet:
        keyset = self._set
        if keyset is None:
            return await self._refresh("initial", seen_at=None)
        too_old = self._clock() - keyset.fetched_at >= self.max_age_s
        if too_old and self._clock() - self._last_attempt >= self.refetch_interval_s:
            return await self._refresh("expired", seen_at=keyset.fetched_at)
        return keyset

    async def _refresh(self, trigger: str, seen_at: float | None) -> _KeySet:
        async with self._lock:
            current = self._set
            if current is not None and current.fetched_at != seen_at:
                return current  # someone else refreshed while we waited
            if current is None and self._clock() - self._last_attempt < NO_KEYS_RETRY_S:
                raise Unavailable("cannot verify access tokens: the auth service is unavailable")
            self._last_attempt = self._clock()
            try:
                keys, document = parse_jwks(await self._fetch())
            except Exception as exc:
                JWKS_FETCHES.labels(trigger, "error").inc()
                log.warning("jwks fetch failed", trigger=trigger, error=f"{type(exc).__name__}")
                if current is not None:
                    return current  # keep verifying with the keys we have
                raise Unavailable(
                    "cannot verify access tokens: the auth service is unavailable"
                ) from exc
            JWKS_FETCHES.labels(trigger, "ok").inc()
            self._set = _KeySet(keys, document, self._clock())
            return self._set


# -- tokens ------------------------------------------------------------------------------------
class TokenVerifier:
    def __init__(
        self,
        jwks: JwksCache,
        revocations: RevocationCheck | None = None,
        *,
        issuer: str,
        audience: str,
        leeway_s: float,
        expected_typ: str = AT_JWT,
        refuse_service_tokens: bool = False,
    ) -> None:
        self.expected_typ = expected_typ.lower()
        self.refuse_service_tokens = refuse_service_tokens
        self.jwks = jwks
        self.revocations = revocations
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        # raw token -> (claims, kid); insertion-ordered, the oldest dropped first when full.
        self._verified: dict[str, tuple[AccessToken, str]] = {}

    async def verify(self, token: str) -> AccessToken:
        """The token's claims, or TokenRejected (401) / Unavailable (503)."""
        try:
            return await self._verify(token)
        except TokenRejected as exc:
            TOKENS_REJECTED.labels(exc.reason).inc()
            raise

    async def _verify(self, token: str) -> AccessToken:
        cached = self._verified.get(token)
        if cached is not None:
            access, kid = cached
            try:
                if time.time() > access.expires_at + self.leeway_s:
                    raise TokenRejected("expired", "access token has expired")
                await self.jwks.key(kid)  # its key may have been withdrawn since
            except TokenRejected:
                self._verified.pop(token, None)
                raise
            await self._check_revoked(access)
            return access
        access, kid = await self._verify_signed(token)
        await self._check_revoked(access)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (access, kid)
        return access

    async def _check_revoked(self, access: AccessToken) -> None:
        if self.revocations is None:
            return
        reason = await self.revocations.revoked_reason(
            access.jti, access.session_id, access.subject, access.issued_at
        )
        if reason is not None:
            raise TokenRejected(reason, "access token has been revoked")

    async def _verify_signed(self, token: str) -> tuple[AccessToken, str]:
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRejected("malformed", "access token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed", "access token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise TokenRejected(
                "algorithm",
                f"access token algorithm {alg!s:.16} is not accepted (EdDSA or RS256 only)",
            )
        typ = str(header.get("typ", "")).lower().removeprefix("application/")
        if typ != self.expected_typ:
            raise TokenRejected("wrong_type", "not an access token (header typ must be at+jwt)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise TokenRejected("malformed", "access token has no key id (kid)")
        key = await self.jwks.key(kid)
        if key.algorithm_name != alg:
            raise TokenRejected("algorithm", "access token algorithm does not match its key")
        payload = self._decode(token, key, alg)
        try:
            claims = _Claims.model_validate(payload)
        except ValidationError:
            raise TokenRejected("claims", "access token claims are malformed") from None
        if self.refuse_service_tokens and (
            claims.sub.startswith(SERVICE_SUBJECT_PREFIX) or SERVICE_ROLE in claims.roles
        ):
            raise TokenRejected(
                "service_token",
                "service tokens are for service-to-service calls only; "
                "sign in as a user to call this API",
            )
        access = AccessToken(
            subject=claims.sub,
            jti=claims.jti,
            issued_at=claims.iat,
            expires_at=claims.exp,
            session_id=claims.sid,
            plan=normalise_plan(claims.plan),
            roles=frozenset(claims.roles),
            permissions=frozenset(claims.perms),
            email_verified=claims.email_verified,
            raw=token,
        )
        return access, kid

    def _decode(self, token: str, key: PyJWK, alg: str) -> dict[str, Any]:
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("expired", "access token has expired") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("signature", "access token signature is invalid") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("audience", "access token is not meant for this API") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("issuer", "access token has an unexpected issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected("claims", f"access token lacks the {exc.claim!r} claim") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("not_yet_valid", "access token is not valid yet") from None
        except jwt.PyJWTError:
            raise TokenRejected("malformed", "access token is malformed") from None
        return payload


# -- services: the caller of a gRPC call ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenCaller(CallerIdentity):
    """A caller identity that also carries the verified token (email_verified, sid, jti...)."""

    token: AccessToken | None = field(default=None, repr=False)


class JwksTokenResolver:
    """aether_common.grpc's `IdentityResolver` for services: the `authorization: Bearer` token in
    the metadata verified with auth's JWKS; no token -> anonymous (the RPC then refuses it)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def resolve(self, metadata: Mapping[str, str]) -> CallerIdentity:
        raw = bearer_token(metadata)
        if raw is None:
            if metadata.get("authorization"):
                raise Unauthenticated("authorization metadata must be 'Bearer <access token>'")
            return ANONYMOUS
        token = await self.verifier.verify(raw)
        return TokenCaller(
            user_id=token.subject,
            roles=token.roles,
            permissions=token.permissions,
            plan=token.plan,
            access_token=token.raw,
            token=token,
        )
