"""RBAC: permissions from plan + role in the token, SetUserAccess for `users:admin` only."""

from __future__ import annotations

from typing import Any

import jwt

from aether.auth.v1 import auth_pb2, events_pb2
from aether_auth import events, repository
from aether_auth.rbac import Plan, Role
from aether_common.postgres import UnitOfWork


async def make_admin(auth: Any, kit: Any) -> tuple[str, str]:
    """An admin (as the operator CLI makes the first one) and its token."""
    email = kit.unique_email("admin")
    await auth.register(email)

    async def promote(uow: UnitOfWork) -> None:
        user = await repository.get_user_by_email(uow.conn, email)
        assert user is not None
        await auth.app.service.change_access(
            uow, user, plan=Plan.ADMIN, role=Role.ADMIN, changed_by="operator-cli"
        )

    await auth.app.database.transaction(promote)
    return email, (await auth.tokens(email)).access_token


async def test_free_users_cannot_change_access(auth: Any, kit: Any) -> None:
    email = kit.unique_email()
    user = await auth.register(email)
    tokens = await auth.tokens(email)
    error = await kit.failure(
        auth.stub.SetUserAccess(
            auth_pb2.SetUserAccessRequest(user_id=user.id, plan=auth_pb2.PLAN_ADMIN),
            metadata=kit.bearer(tokens.access_token),
        )
    )
    assert error.http_status == 403
    assert "users:admin" in error.detail
    anonymous = await kit.failure(
        auth.stub.SetUserAccess(auth_pb2.SetUserAccessRequest(user_id=user.id))
    )
    assert anonymous.http_status == 401
    assert (await auth.sql("SELECT plan FROM users"))[0]["plan"] == "free"


async def test_admin_changes_plan_and_role(auth: Any, kit: Any) -> None:
    _admin_email, admin_token = await make_admin(auth, kit)
    claims = jwt.decode(admin_token, options={"verify_signature": False})
    assert claims["plan"] == "admin"
    assert claims["roles"] == ["admin"]
    assert "users:admin" in claims["perms"]
    assert "ratelimit:unlimited" in claims["perms"]
    admin_id = claims["sub"]

    email = kit.unique_email()
    user = await auth.register(email)
    answer = await auth.stub.SetUserAccess(
        auth_pb2.SetUserAccessRequest(
            user_id=user.id, plan=auth_pb2.PLAN_PREMIUM, role=auth_pb2.ROLE_MODERATOR
        ),
        metadata=kit.bearer(admin_token),
    )
    assert (answer.user.plan, answer.user.role) == (auth_pb2.PLAN_PREMIUM, auth_pb2.ROLE_MODERATOR)
    assert {"ai:deep", "discussion:moderate"} <= set(answer.user.permissions)
    # The user's next token carries the new permissions.
    token = (await auth.tokens(email)).access_token
    perms = jwt.decode(token, options={"verify_signature": False})["perms"]
    assert "ai:deep" in perms
    assert "users:admin" not in perms

    changes = await auth.events(events.ROLE_CHANGED, events_pb2.UserRoleChanged)
    last = changes[-1]
    assert last.subject == user.id
    assert last.payload.changed_by == admin_id
    assert (last.payload.old_plan, last.payload.new_plan) == (
        auth_pb2.PLAN_FREE,
        auth_pb2.PLAN_PREMIUM,
    )
    assert (last.payload.old_role, last.payload.new_role) == (
        auth_pb2.ROLE_USER,
        auth_pb2.ROLE_MODERATOR,
    )
    assert changes[0].payload.changed_by == "operator-cli"

    # Taking permissions away signs the user out everywhere: no stale token keeps them.
    await auth.stub.SetUserAccess(
        auth_pb2.SetUserAccessRequest(user_id=user.id, plan=auth_pb2.PLAN_FREE),
        metadata=kit.bearer(admin_token),
    )
    stale = await kit.failure(auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(token)))
    assert stale.http_status == 401
    await auth.tokens(email)  # signing in again works, with the reduced permissions


async def test_set_user_access_bad_input(auth: Any, kit: Any) -> None:
    _, admin_token = await make_admin(auth, kit)
    md = kit.bearer(admin_token)
    bad_id = await kit.failure(
        auth.stub.SetUserAccess(auth_pb2.SetUserAccessRequest(user_id="42"), metadata=md)
    )
    assert bad_id.http_status == 400
    assert "user_id" in bad_id.field_errors
    missing = await kit.failure(
        auth.stub.SetUserAccess(
            auth_pb2.SetUserAccessRequest(
                user_id="00000000-0000-4000-8000-000000000000", plan=auth_pb2.PLAN_PREMIUM
            ),
            metadata=md,
        )
    )
    assert missing.http_status == 404
    user = await auth.register()
    nothing = await kit.failure(
        auth.stub.SetUserAccess(auth_pb2.SetUserAccessRequest(user_id=user.id), metadata=md)
    )
    assert nothing.http_status == 400
    unknown_plan = await kit.failure(
        auth.stub.SetUserAccess(
            auth_pb2.SetUserAccessRequest(user_id=user.id, plan=99),  # type: ignore[arg-type]
            metadata=md,
        )
    )
    assert unknown_plan.http_status == 400
    assert "plan" in unknown_plan.field_errors
