"""Services verify their callers' access tokens against auth's JWKS, fetched over gRPC.

    auth, server = verifying_server("chat", settings, host=..., port=...)  # start both

`settings` has the fields of `CallerVerification` (auth's address, the token's issuer and
audience, the JWKS cache's timings).

`JwksTokenResolver` turns a valid `authorization: Bearer <jwt>` into the call's identity and
refuses a bad token with UNAUTHENTICATED. The JWKS is cached and refreshed by `JwksCache` (a
flood of unknown kids cannot hammer auth). `delegating_services` lists the services this one
lets act for a user (aether_common.delegation); None (the default) leaves that header unread.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether_common.access_tokens import JwksCache, JwksTokenResolver, TokenVerifier
from aether_common.delegation import DelegatingResolver
from aether_common.grpc import GrpcServer, Peer, ServiceClient, create_server
from aether_common.identity import IdentityResolver

AUTH = Peer(
    "auth",
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    auth_pb2_grpc.AuthServiceStub,
    idempotent=("GetJwks",),
)


class AuthJwks(ServiceClient["auth_pb2_grpc.AuthServiceAsyncStub"]):
    """Component: the channel to auth that the JWKS is fetched over (opened at start). Readiness
    does not wait on auth: the cached keys go on verifying tokens while it is away."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        super().__init__(AUTH, target, timeout_s=timeout_s, needs_peer=False, name="auth-jwks")

    async def fetch(self) -> str:
        """auth's JWKS document (JwksCache calls it; failures become 503 there)."""
        response = await self.call(self.stub.GetJwks, auth_pb2.GetJwksRequest())
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


class CallerVerification(Protocol):
    """The settings a service verifies its callers with (its config declares them)."""

    @property
    def auth_grpc_target(self) -> str: ...
    @property
    def auth_timeout_s(self) -> float: ...
    @property
    def jwt_issuer(self) -> str: ...
    @property
    def jwt_audience(self) -> str: ...
    @property
    def jwt_leeway_s(self) -> float: ...
    @property
    def jwks_max_age_s(self) -> float: ...
    @property
    def jwks_refetch_interval_s(self) -> float: ...


def verifying_server(
    service: str,
    settings: CallerVerification,
    *,
    host: str,
    port: int,
    delegating_services: Collection[str] | None = None,
) -> tuple[AuthJwks, GrpcServer]:
    """The gRPC server of `service`, whose every call's token is verified against auth's JWKS,
    and the channel to auth it fetches the JWKS over (two components: start both).
    `delegating_services`: the services whose `x-aether-on-behalf-of` this one honours (any
    other caller sending it is refused; an empty list refuses all); None: the header is unread."""
    auth = AuthJwks(settings.auth_grpc_target, timeout_s=settings.auth_timeout_s)
    resolver = token_resolver(
        auth,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_s=settings.jwt_leeway_s,
        max_age_s=settings.jwks_max_age_s,
        refetch_interval_s=settings.jwks_refetch_interval_s,
    )
    identity: IdentityResolver = (
        resolver
        if delegating_services is None
        else DelegatingResolver(resolver, delegating_services)
    )
    return auth, create_server(service, host=host, port=port, identity_resolver=identity)
