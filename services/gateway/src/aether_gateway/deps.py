"""FastAPI dependencies: the lifespan's resources and the caller, as typed `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from aether.auth.v1 import auth_pb2
from aether_common.access_tokens import AccessToken, JwksCache
from aether_common.errors import Forbidden, Unauthenticated
from aether_gateway.access import MAX_USER_AGENT, Access, client_ip
from aether_gateway.cache import ProfileCache
from aether_gateway.resources import GatewayResources
from aether_gateway.revocation import Revocations
from aether_gateway.upstream import AuthClient


class MissingCredentials(Unauthenticated):
    def http_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="aether"'}


async def get_resources(request: Request) -> GatewayResources:
    resources: GatewayResources = request.app.state.gateway
    return resources


Resources = Annotated[GatewayResources, Depends(get_resources)]


async def get_auth(resources: Resources) -> AuthClient:
    return resources.auth


async def get_profiles(resources: Resources) -> ProfileCache:
    return resources.profiles


async def get_jwks(resources: Resources) -> JwksCache:
    return resources.jwks


async def get_revocations(resources: Resources) -> Revocations:
    return resources.revocations


Auth = Annotated[AuthClient, Depends(get_auth)]
Profiles = Annotated[ProfileCache, Depends(get_profiles)]
Jwks = Annotated[JwksCache, Depends(get_jwks)]
RevocationList = Annotated[Revocations, Depends(get_revocations)]


async def get_access(request: Request) -> Access:
    access: Access | None = getattr(request.state, "access", None)
    if access is None:  # a path the access middleware skips
        user_agent = request.headers.get("user-agent", "")[:MAX_USER_AGENT]
        return Access(client_ip(request.scope), user_agent)
    return access


AccessInfo = Annotated[Access, Depends(get_access)]


async def require_caller(access: AccessInfo) -> AccessToken:
    """The verified caller, else 401 saying why (or 503 when tokens cannot be checked now)."""
    if access.token is not None:
        return access.token
    if access.error is not None:
        raise access.error
    raise MissingCredentials("authentication required: send 'Authorization: Bearer <token>'")


Caller = Annotated[AccessToken, Depends(require_caller)]


async def get_client_info(access: AccessInfo) -> auth_pb2.ClientInfo:
    """What auth records of the end client (throttling, security events)."""
    return auth_pb2.ClientInfo(ip=access.client_ip, user_agent=access.user_agent)


Client = Annotated[auth_pb2.ClientInfo, Depends(get_client_info)]


class RequirePermission:
    """`Depends(RequirePermission("users:admin"))`: checked here AND again by the service."""

    def __init__(self, permission: str) -> None:
        self.permission = permission

    async def __call__(self, caller: Caller) -> AccessToken:
        if self.permission not in caller.permissions:
            raise Forbidden(
                f"missing permission: {self.permission}", metadata={"missing": self.permission}
            )
        return caller
