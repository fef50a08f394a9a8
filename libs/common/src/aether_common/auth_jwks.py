"""Services verify their callers' access tokens against auth's JWKS, fetched over gRPC.

    auth = AuthJwks(settings.auth_grpc_target, timeout_s=5)          # a Component: start it
    server = create_server(..., identity_resolver=token_resolver(auth, issuer=..., ...))

`JwksTokenResolver` turns a valid `authorization: Bearer <jwt>` into the call's identity and
refuses a bad token with UNAUTHENTICATED. The JWKS is cached and refreshed by `JwksCache` (a
flood of unknown kids cannot hammer auth).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether_common.access_tokens import JwksCache, JwksTokenResolver, TokenVerifier
from aether_common.grpc import create_channel, rpc_errors

AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
if TYPE_CHECKING:  # only the type stubs know the async stub class
    AuthStub = auth_pb2_grpc.AuthServiceAsyncStub
else:
    AuthStub = auth_pb2_grpc.AuthServiceStub


class AuthJwks:
    """Component: the channel to auth that the JWKS is fetched over (opened at start)."""

    name = "auth-jwks"

    def __init__(self, target: str, *, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: AuthStub | None = None

    async def start(self) -> None:
        self._channel = create_channel(
            self.target,
            idempotent_methods=[f"{AUTH_SERVICE}/GetJwks"],
            default_timeout=self.timeout_s,
        )
        self._stub = AuthStub(self._channel)

    async def stop(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(grace=None)

    async def ready(self) -> bool:
        return self._channel is not None

    async def fetch(self) -> str:
        """auth's JWKS document (JwksCache calls it; failures become 503 there)."""
        if self._stub is None:
            raise RuntimeError("auth channel not started")
        with rpc_errors():
            response = await self._stub.GetJwks(auth_pb2.GetJwksRequest())
        jwks: str = response.jwks_json
        return jwks


def token_resolver(
    jwks: AuthJwks,
    *,
    issuer: str,
    audience: str,
    leeway_s: float,
    max_age_s: float,
    refetch_interval_s: float,
) -> JwksTokenResolver:
    cache = JwksCache(jwks.fetch, max_age_s=max_age_s, refetch_interval_s=refetch_interval_s)
    # Signature and claims; revocation is the gateway's job (its denylist) and tokens are short.
    verifier = TokenVerifier(cache, None, issuer=issuer, audience=audience, leeway_s=leeway_s)
    return JwksTokenResolver(verifier)
