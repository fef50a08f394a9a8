"""FastAPI dependencies: the lifespan's resources and the caller, as typed `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from aether.auth.v1 import auth_pb2
from aether_common.access_tokens import AccessToken, JwksCache
from aether_common.errors import Forbidden, Unauthenticated
from aether_gateway.access_middleware import MAX_USER_AGENT, Access, client_ip
from aether_gateway.auth.cache import ProfileCache
from aether_gateway.auth.client import AuthClient
from aether_gateway.resources import GatewayResources
from aether_gateway.revocation import Revocations


class MissingCredentials(Unauthenticated):
    def http_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="aether"'}


def resources_of(request: Request) -> GatewayResources:
    resources: GatewayResources = request.app.state.gateway
    return resources


def access_of(request: Request) -> Access:
    access: Access | None = getattr(request.state, "access", None)
    if access is None:  # a path the access middleware skips
        user_agent = request.headers.get("user-agent", "")[:MAX_USER_AGENT]
        return Access(client_ip(request.scope), user_agent)
    return access


# Each alias below is ONE dependency that reads the request itself: FastAPI solves (and checks)
# every node of a dependency tree on every request, so nesting them would cost per request.
async def get_resources(request: Request) -> GatewayResources:
    return resources_of(request)


async def get_auth(request: Request) -> AuthClient:
    return resources_of(request).auth


async def get_profiles(request: Request) -> ProfileCache:
    return resources_of(request).profiles


async def get_jwks(request: Request) -> JwksCache:
    return resources_of(request).jwks


async def get_revocations(request: Request) -> Revocations:
    return resources_of(request).revocations


async def get_access(request: Request) -> Access:
    return access_of(request)


async def require_caller(request: Request) -> AccessToken:
    """The verified caller, else 401 saying why (or 503 when tokens cannot be checked now)."""
    return caller_of(access_of(request))


def caller_of(access: Access) -> AccessToken:
    if access.token is not None:
        return access.token
    if access.error is not None:
        raise access.error
    raise MissingCredentials("authentication required: send 'Authorization: Bearer <token>'")


async def get_client_info(request: Request) -> auth_pb2.ClientInfo:
    """What auth records of the end client (throttling, security events)."""
    access = access_of(request)
    return auth_pb2.ClientInfo(ip=access.client_ip, user_agent=access.user_agent)


Resources = Annotated[GatewayResources, Depends(get_resources)]
Auth = Annotated[AuthClient, Depends(get_auth)]
Profiles = Annotated[ProfileCache, Depends(get_profiles)]
Jwks = Annotated[JwksCache, Depends(get_jwks)]
RevocationList = Annotated[Revocations, Depends(get_revocations)]
AccessInfo = Annotated[Access, Depends(get_access)]
Caller = Annotated[AccessToken, Depends(require_caller)]
Client = Annotated[auth_pb2.ClientInfo, Depends(get_client_info)]


class RequirePermission:
    """`Depends(RequirePermission("users:admin"))`: checked here AND again by the service."""

    def __init__(self, permission: str) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> AccessToken:
        caller = caller_of(access_of(request))
        if self.permission not in caller.permissions:
            raise Forbidden(
                f"missing permission: {self.permission}", metadata={"missing": self.permission}
            )
        return caller


class RequireRole:
    """`Depends(RequireRole("admin"))`: checked here AND again by the service."""

    def __init__(self, role: str) -> None:
        self.role = role

    async def __call__(self, request: Request) -> AccessToken:
        caller = caller_of(access_of(request))
        if self.role not in caller.roles:
            raise Forbidden(f"the {self.role} role is required", metadata={"missing": self.role})
        return caller
