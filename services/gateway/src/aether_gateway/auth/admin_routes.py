"""`/api/admin/*`: operations on other users' accounts, for callers holding `users:admin`.

The permission is checked here (from the verified token) and again by auth: the gateway is not
the only line of defence.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from aether.auth.v1 import auth_pb2
from aether_common.access_tokens import AccessToken
from aether_gateway.auth import convert
from aether_gateway.auth.schemas import SetAccessIn, UserOut
from aether_gateway.deps import Auth, Profiles, RequirePermission

USERS_ADMIN = "users:admin"

router = APIRouter(prefix="/api/admin", tags=["admin"])

UserId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Admin = Annotated[AccessToken, Depends(RequirePermission(USERS_ADMIN))]


@router.put("/users/{user_id}/access", summary="Change a user's plan and/or role (SetUserAccess)")
async def set_user_access(
    user_id: UserId, body: SetAccessIn, admin: Admin, auth: Auth, profiles: Profiles
) -> UserOut:
    request = auth_pb2.SetUserAccessRequest(
        user_id=user_id,
        plan=convert.plan_value(body.plan),
        role=convert.role_value(body.role),
    )
    response = await auth.call(auth.stub.SetUserAccess, request, token=admin.raw)
    await profiles.invalidate(user_id)
    return convert.user(response.user)
