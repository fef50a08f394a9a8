"""Service identity: the OAuth 2.0 client-credentials grant (IssueServiceToken).

Clients are configured, not stored (AUTH_SERVICE_CLIENTS: id -> sha256 of the secret and the
permissions its tokens carry), so there is no table and no transaction. A wrong id or secret is
UNAUTHENTICATED with one message for both (no client enumeration), counted and logged without
the secret; failures are throttled per client id in Redis (throttle.LoginThrottle, its own key
prefix), unknown ids included. The secret check is constant-time, and an unknown id costs the
same hash and comparison as a known one.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from aether_auth.config import ServiceClientSettings, secret_sha256
from aether_auth.metrics import SERVICE_TOKENS
from aether_auth.throttle import LoginThrottle
from aether_auth.tokens import AccessTokens
from aether_common.errors import RateLimited, Unauthenticated, ValidationFailed
from aether_common.logging import get_logger
from aether_common.settings import Environment, is_placeholder

INVALID_CLIENT = "invalid client id or secret"
MAX_CLIENT_ID = 64
MAX_SECRET = 512
# Compared against when the id is unknown, so both paths take the same time.
_NO_SECRET_SHA256 = "0" * 64

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceToken:
    access_token: str
    expires_at: datetime


class ServiceClients:
    def __init__(
        self,
        clients: dict[str, ServiceClientSettings],
        tokens: AccessTokens,
        throttle: LoginThrottle,
        *,
        environment: Environment,
        ttl_s: int,
    ) -> None:
        self._clients = clients
        self._tokens = tokens
        self._throttle = throttle
        self._environment = environment
        self.ttl_s = ttl_s

    async def issue(self, client_id: str, client_secret: str) -> ServiceToken:
        """A fresh service token for the client, or why not."""
        if not client_id or not client_secret:
            raise ValidationFailed("client_id and client_secret are required")
        if len(client_id) > MAX_CLIENT_ID or len(client_secret) > MAX_SECRET:
            raise ValidationFailed(
                f"client_id is at most {MAX_CLIENT_ID} and client_secret {MAX_SECRET} characters"
            )
        client = self._clients.get(client_id)
        label = client_id if client is not None else "unknown"
        throttle_key = "service:" + client_id
        refusal = await self._throttle.refusal(throttle_key, "")
        if refusal is not None:
            SERVICE_TOKENS.labels(label, "throttled").inc()
            log.warning("service token refused: throttled", client_id=client_id[:MAX_CLIENT_ID])
            raise RateLimited(
                f"too many failed attempts for this client; retry in {refusal.retry_after}s",
                code="client_throttled",
                retry_after=refusal.retry_after,
            )
        expected = client.secret_sha256 if client is not None else _NO_SECRET_SHA256
        matches = hmac.compare_digest(secret_sha256(client_secret), expected)
        if client is None or not matches:
            await self._throttle.record_failure(throttle_key, "")
            SERVICE_TOKENS.labels(label, "bad_credentials").inc()
            log.warning(
                "service token refused: bad credentials",
                client_id=client_id,
                known_client=client is not None,
            )
            raise Unauthenticated(INVALID_CLIENT, code="invalid_client")
        if self._environment is not Environment.DEV and is_placeholder(client_secret):
            # Settings refuse the placeholder hashes they know; this catches the rest
            # (any `dev-only-...` or `change-me...` secret) once the plain secret is seen.
            SERVICE_TOKENS.labels(label, "placeholder_secret").inc()
            log.error("service token refused: placeholder client secret", client_id=client_id)
            raise Unauthenticated(
                f"a placeholder client secret is refused outside dev (AETHER_ENV="
                f"{self._environment}); give client {client_id!r} a real secret",
                code="invalid_client",
            )
        await self._throttle.clear(throttle_key)
        token, claims = self._tokens.issue_service(client_id, client.permissions, ttl_s=self.ttl_s)
        SERVICE_TOKENS.labels(label, "issued").inc()
        log.info("service token issued", client_id=client_id, expires_at=claims.exp)
        return ServiceToken(token, datetime.fromtimestamp(claims.exp, UTC))
