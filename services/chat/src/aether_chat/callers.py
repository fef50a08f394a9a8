"""Who is calling: the access token in the gRPC metadata, verified against auth's JWKS.

Every chat RPC is "caller" (chat.proto): `JwksTokenResolver` turns a valid `authorization:
Bearer <jwt>` into the identity, refuses a bad token with UNAUTHENTICATED, and `require_caller`
refuses a call that came without one. The JWKS comes from auth's `GetJwks` over one shared
channel, cached and refreshed by `JwksCache` (a flood of unknown kids cannot hammer auth).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether_common.access_tokens import JwksCache, JwksTokenResolver, TokenVerifier
from aether_common.errors import Unauthenticated
from aether_common.grpc import create_channel, rpc_errors
from aether_common.identity import current_identity

AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
if TYPE_CHECKING:  # only the type stubs know the async stub class
    AuthStub = auth_pb2_grpc.AuthServiceAsyncStub
else:
    AuthStub = auth_pb2_grpc.AuthServiceStub
# Platform permission (auth's rbac: the moderator and admin roles) to moderate every room.
MODERATE = "chat:moderate"


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    # Holds `chat:moderate`: deletes any message and removes members in any room.
    moderator: bool = False


def require_caller() -> Caller:
    """The verified caller of the current RPC; UNAUTHENTICATED when the call had no token."""
    identity = current_identity()
    if identity.user_id is None:
        raise Unauthenticated("this call needs an access token (authorization: Bearer ...)")
    return Caller(identity.user_id, moderator=identity.has_permission(MODERATE))


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
