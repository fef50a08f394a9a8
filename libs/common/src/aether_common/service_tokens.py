"""Service identity, the caller's side: a service's own access token from auth (OAuth 2.0
client credentials, auth's IssueServiceToken), for calls made when no user request is served.

    creds = ServiceCredentials(settings.auth_grpc_target, settings.auth_client_id,
                               settings.auth_client_secret, timeout_s=settings.auth_timeout_s)
    # a Component: the runner starts it (it opens the channel; nothing is fetched yet)
    await charts.call(charts.stub.GetIndicators, request, token=await creds.token())

Settings convention: a service that needs its own identity declares `auth_client_id` (default
its name) and `auth_client_secret` (a SecretStr, no default outside the devstack), so under its
env prefix they read `<SERVICE>_AUTH_CLIENT_ID` and `<SERVICE>_AUTH_CLIENT_SECRET`; auth lists
the same id with the secret's sha256 in AUTH_SERVICE_CLIENTS. A placeholder secret is refused
outside dev by the settings base class (and by auth).

The token is cached and renewed once `RENEW_AT` of its lifetime has passed (timed on the local
monotonic clock from the lifetime auth granted, so clock skew does not matter). Renewal is
single flight: concurrent callers wait on one IssueServiceToken. If a renewal fails while the
cached token is still valid, that token is used and the next call tries again; with no valid
token, auth away is `Unavailable`, and a refusal by auth (wrong secret, throttled) is also
`Unavailable` to this service's own callers (they can do nothing about it), logged as an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr

from aether.auth.v1 import auth_pb2, auth_pb2_grpc  # noqa: F401 (the stub type below)
from aether_common.auth_jwks import AUTH
from aether_common.errors import AetherError, Timeout, Unavailable
from aether_common.grpc import ServiceClient
from aether_common.logging import get_logger

# Renew once this share of the lifetime has passed (a 300 s token: after 240 s).
RENEW_AT = 0.8
# Never use a token closer to its expiry than this: the callee checks it a moment later.
EXPIRY_MARGIN_S = 5.0

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Cached:
    token: str
    renew_at: float  # monotonic
    expires_at: float  # monotonic, less EXPIRY_MARGIN_S


class ServiceCredentials(ServiceClient["auth_pb2_grpc.AuthServiceAsyncStub"]):
    """Component: the channel to auth and the service's cached access token. Readiness does not
    wait on auth (a cached token keeps working while it is away)."""

    def __init__(
        self,
        auth_target: str,
        client_id: str,
        client_secret: str | SecretStr,
        *,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            AUTH, auth_target, timeout_s=timeout_s, needs_peer=False, name="auth-credentials"
        )
        self.client_id = client_id
        self._secret = (
            client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        )
        self._clock = clock
        self._cached: _Cached | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # IssueServiceToken calls made (tests and logs)

    async def token(self) -> str:
        """A valid access token of this service (cached; renewed before it expires)."""
        cached = self._cached
        if cached is not None and self._clock() < cached.renew_at:
            return cached.token
        async with self._lock:
            cached = self._cached  # another caller may have renewed while we waited
            now = self._clock()
            if cached is not None and now < cached.renew_at:
                return cached.token
            try:
                self._cached = await self._fetch()
            except AetherError as exc:
                if cached is not None and now < cached.expires_at:
                    log.warning(
                        "service token renewal failed; using the current one",
                        client_id=self.client_id,
                        error=exc.error_code,
                    )
                    return cached.token
                raise self._unavailable(exc) from exc
            return self._cached.token

    def invalidate(self) -> None:
        """Forget the cached token (a callee refused it, e.g. after a key withdrawal)."""
        self._cached = None

    async def _fetch(self) -> _Cached:
        self.fetches += 1
        sent_at = self._clock()
        response = await self.call(
            self.stub.IssueServiceToken,
            auth_pb2.IssueServiceTokenRequest(
                client_id=self.client_id, client_secret=self._secret.get_secret_value()
            ),
        )
        # The lifetime auth granted, counted from when we asked (never later than auth's exp).
        lifetime = max(0.0, response.expires_time.seconds - time.time())
        return _Cached(
            response.access_token,
            renew_at=sent_at + lifetime * RENEW_AT,
            expires_at=sent_at + lifetime - EXPIRY_MARGIN_S,
        )

    def _unavailable(self, exc: AetherError) -> Unavailable:
        if isinstance(exc, Unavailable):
            return exc
        if isinstance(exc, Timeout):
            return Unavailable(f"auth did not answer in time: {exc.detail}")
        log.error(
            "auth refused this service's credentials",
            client_id=self.client_id,
            error=exc.error_code,
            detail=exc.detail,
        )
        return Unavailable(
            f"cannot get a service token for {self.client_id!r}: auth answered {exc.detail!r}"
        )
