"""OpenID Connect login as a relying party: authorization code flow with PKCE (S256).

StartOAuth stores the login's state, nonce and PKCE verifier in Redis (single use, with a TTL)
and sends the browser to the provider's authorization endpoint, found by discovery. FinishOAuth
takes the state back (a missing or re-used state is refused), exchanges the code at the token
endpoint, and validates the id_token with the provider's JWKS: signature (asymmetric algorithms
only), `iss`, `aud` (and `azp`), `exp`, `iat`, and the `nonce` bound to this login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from redis.asyncio import Redis

from aether_auth.config import OAuthProviderSettings
from aether_auth.crypto import random_token, token_hash
from aether_common.errors import NotFound, Unauthenticated, Unavailable
from aether_common.logging import get_logger

# Never "none" nor HMAC: an id_token must be signed with one of the provider's public keys.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
METADATA_MAX_AGE_S = 3600.0
JWKS_REFETCH_INTERVAL_S = 10.0
LEEWAY_S = 60

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """What StartOAuth remembers for FinishOAuth."""

    provider: str
    redirect_uri: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True, slots=True)
class OidcIdentity:
    provider: str
    subject: str
    email: str
    email_verified: bool
    name: str


@dataclass(frozen=True, slots=True)
class _Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: frozenset[str]
    fetched_at: float


def s256_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class OAuthStates:
    """Pending logins in Redis, keyed by a hash of the state; each can be taken once."""

    def __init__(self, redis: Redis, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix + "oauth-state:"
        self.ttl_s = ttl_s

    async def put(self, login: PendingLogin) -> str:
        state = random_token()
        key = self._prefix + token_hash(state).hex()
        await self._redis.set(key, json.dumps(asdict(login)), ex=self.ttl_s)
        return state

    async def take(self, state: str) -> PendingLogin | None:
        if not state:
            return None
        raw = await self._redis.getdel(self._prefix + token_hash(state).hex())
        return PendingLogin(**json.loads(raw)) if raw else None


class OidcClient:
    """One configured provider: discovery, authorization URL, code exchange, id_token checks."""

    def __init__(self, config: OAuthProviderSettings, http: httpx.AsyncClient) -> None:
        self.config = config
        self._http = http
        self._metadata: _Metadata | None = None
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_fetched = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    def _unavailable(self, what: str, exc: Exception | None = None) -> Unavailable:
        log.warning("oauth provider unreachable", provider=self.name, what=what, error=repr(exc))
        return Unavailable(f"OAuth provider {self.name!r} is unavailable ({what})")

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise self._unavailable(what, exc) from None
        if not isinstance(data, dict):
            raise self._unavailable(what)
        return data

    async def metadata(self) -> _Metadata:
        cached = self._metadata
        if cached is not None and time.monotonic() - cached.fetched_at < METADATA_MAX_AGE_S:
            return cached
        doc = await self._get_json(self.config.discovery_document_url, "discovery")
        issuer = str(doc.get("issuer", ""))
        if issuer.rstrip("/") != self.config.issuer.rstrip("/"):
            # OIDC Discovery 4.3: the document must name the issuer we configured.
            log.error("oauth discovery issuer mismatch", provider=self.name, issuer=issuer)
            raise self._unavailable("discovery document names another issuer")
        try:
            metadata = _Metadata(
                issuer=issuer,
                authorization_endpoint=str(doc["authorization_endpoint"]),
                token_endpoint=str(doc["token_endpoint"]),
                jwks_uri=str(doc["jwks_uri"]),
                algorithms=frozenset(doc.get("id_token_signing_alg_values_supported", ["RS256"]))
                & ASYMMETRIC_ALGORITHMS,
                fetched_at=time.monotonic(),
            )
        except KeyError as exc:
            raise self._unavailable(f"discovery document lacks {exc}") from None
        self._metadata = metadata
        return metadata

    async def authorization_url(self, redirect_uri: str, state: str, login: PendingLogin) -> str:
        metadata = await self.metadata()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(self.config.scopes),
                "state": state,
                "nonce": login.nonce,
                "code_challenge": s256_challenge(login.code_verifier),
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return f"{metadata.authorization_endpoint}{separator}{query}"

    async def exchange_code(self, code: str, login: PendingLogin) -> str:
        """The id_token the token endpoint returns for `code`."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": login.redirect_uri,
            "code_verifier": login.code_verifier,
        }
        secret = self.config.client_secret.get_secret_value()
        try:
            if self.config.token_auth_method == "client_secret_basic":  # noqa: S105 (a method name)
                auth = httpx.BasicAuth(self.config.client_id, secret)
                response = await self._http.post(metadata.token_endpoint, data=form, auth=auth)
            else:
                form |= {"client_id": self.config.client_id, "client_secret": secret}
                response = await self._http.post(metadata.token_endpoint, data=form)
        except httpx.HTTPError as exc:
            raise self._unavailable("token endpoint", exc) from None
        if response.status_code >= 500:
            raise self._unavailable(f"token endpoint answered {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error", "error") if isinstance(body, dict) else "error"
            raise Unauthenticated(
                f"the OAuth provider refused the authorization code ({error})",
                code="oauth_failed",
            )
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise Unauthenticated("the OAuth provider returned no id_token", code="oauth_failed")
        return id_token

    async def _fetch_jwks(self, metadata: _Metadata) -> None:
        doc = await self._get_json(metadata.jwks_uri, "jwks")
        try:
            self._jwks = jwt.PyJWKSet.from_dict(doc)
        except jwt.PyJWTError as exc:
            raise self._unavailable("unusable JWKS", exc) from None
        self._jwks_fetched = time.monotonic()

    def _find(self, kid: str | None) -> Any:
        keys = self._jwks.keys if self._jwks is not None else []
        if kid is None and len(keys) == 1:
            return keys[0].key
        return next((k.key for k in keys if kid is not None and k.key_id == kid), None)

    async def _key(self, kid: str | None, metadata: _Metadata) -> Any:
        if self._jwks is None:
            await self._fetch_jwks(metadata)
        key = self._find(kid)
        if key is None and time.monotonic() - self._jwks_fetched >= JWKS_REFETCH_INTERVAL_S:
            await self._fetch_jwks(metadata)  # the provider may have rotated its keys
            key = self._find(kid)
        return key

    async def validate_id_token(self, id_token: str, nonce: str) -> OidcIdentity:
        metadata = await self.metadata()

        def refuse(why: str) -> Unauthenticated:
            return Unauthenticated(f"invalid id_token from {self.name}: {why}", code="oauth_failed")

        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.DecodeError:
            raise refuse("malformed") from None
        algorithm = header.get("alg")
        if algorithm not in metadata.algorithms:
            raise refuse(f"algorithm {algorithm!r} is not accepted")
        key = await self._key(header.get("kid"), metadata)
        if key is None:
            raise refuse("signed by an unknown key")
        try:
            claims = jwt.decode(
                id_token,
                key,
                algorithms=[str(algorithm)],
                audience=self.config.client_id,
                issuer=metadata.issuer,
                leeway=LEEWAY_S,
                options={"require": ["iss", "aud", "sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise refuse("expired") from None
        except jwt.InvalidSignatureError:
            raise refuse("bad signature") from None
        except jwt.InvalidAudienceError:
            raise refuse("issued for another client") from None
        except jwt.InvalidIssuerError:
            raise refuse("issued by another issuer") from None
        except jwt.PyJWTError as exc:
            raise refuse(str(exc)) from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.config.client_id:
            raise refuse("authorized party (azp) is another client")
        if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise refuse("nonce does not match this login")
        email_verified = claims.get("email_verified", False)
        if isinstance(email_verified, str):  # some providers send "true"
            email_verified = email_verified.lower() == "true"
        return OidcIdentity(
            provider=self.name,
            subject=str(claims["sub"]),
            email=str(claims.get("email", "")),
            email_verified=bool(email_verified),
            name=str(claims.get("name", "")),
        )


class OidcProviders:
    """Component: the configured providers and the HTTP client they share."""

    name = "oidc-providers"

    def __init__(self, configs: list[OAuthProviderSettings], *, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._clients = {config.name: OidcClient(config, self._http) for config in configs}

    def all(self) -> list[OidcClient]:
        return list(self._clients.values())

    def get(self, name: str) -> OidcClient:
        client = self._clients.get(name)
        if client is None:
            raise NotFound(f"unknown OAuth provider {name!r}", code="unknown_provider")
        return client

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self._http.aclose()

    async def ready(self) -> bool:
        return True  # a provider being down must not take the whole service out of rotation


def new_pending_login(provider: str, redirect_uri: str) -> PendingLogin:
    return PendingLogin(
        provider=provider,
        redirect_uri=redirect_uri,
        nonce=random_token(24),
        code_verifier=secrets.token_urlsafe(48),  # 64 characters: within RFC 7636's 43..128
    )
