"""Plans, roles and the permissions they grant (the `perms` claim of every access token).

A plan is what the user pays for (features and rate limits); a role is what the user may do to
others. Permissions are the union of both, so services check one flat list and never reason
about plans or roles themselves.
"""

from __future__ import annotations

from enum import StrEnum

from aether.auth.v1 import auth_pb2


class Plan(StrEnum):
    FREE = "free"
    PREMIUM = "premium"
    ADMIN = "admin"


class Role(StrEnum):
    USER = "user"
    MODERATOR = "moderator"
    ADMIN = "admin"


# Permission names: `<domain>:<action>`.
USERS_ADMIN = "users:admin"  # change a user's plan or role (SetUserAccess)

_FREE = frozenset(
    {
        "profile:read",
        "profile:write",
        "chat:read",
        "chat:write",
        "discussion:read",
        "discussion:write",
        "charts:read",
        "alerts:read",
        "alerts:write",
        "ai:chat",
        "memory:read",
        "memory:write",
    }
)
_PREMIUM = _FREE | {"ai:deep", "ai:analyze", "charts:generate", "alerts:webhook", "jobs:write"}

PLAN_PERMISSIONS: dict[Plan, frozenset[str]] = {
    Plan.FREE: _FREE,
    Plan.PREMIUM: frozenset(_PREMIUM),
    # The admin plan: every feature, no rate limit (the gateway reads `plan`).
    Plan.ADMIN: frozenset(_PREMIUM | {"ratelimit:unlimited", "ops:read"}),
}
ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.USER: frozenset(),
    Role.MODERATOR: frozenset({"discussion:moderate", "chat:moderate"}),
    # ai:admin: AI performance data and cache invalidation; memory:admin: write the shared
    # "knowledge" namespace (memory:write only covers a user's own memories).
    Role.ADMIN: frozenset(
        {
            "discussion:moderate",
            "chat:moderate",
            USERS_ADMIN,
            "audit:read",
            "ops:read",
            "ai:admin",
            "memory:admin",
        }
    ),
}


def permissions_for(plan: Plan, role: Role) -> list[str]:
    """Sorted, so tokens and answers are stable."""
    return sorted(PLAN_PERMISSIONS[plan] | ROLE_PERMISSIONS[role])


def roles_for(role: Role) -> list[str]:
    """The `roles` claim: a list, so a later user may hold several."""
    return [role.value]


# -- protobuf enums ----------------------------------------------------------------------------
_PLAN_TO_PB = {
    Plan.FREE: auth_pb2.PLAN_FREE,
    Plan.PREMIUM: auth_pb2.PLAN_PREMIUM,
    Plan.ADMIN: auth_pb2.PLAN_ADMIN,
}
_ROLE_TO_PB = {
    Role.USER: auth_pb2.ROLE_USER,
    Role.MODERATOR: auth_pb2.ROLE_MODERATOR,
    Role.ADMIN: auth_pb2.ROLE_ADMIN,
}


def plan_to_pb(plan: Plan) -> auth_pb2.Plan.ValueType:
    return _PLAN_TO_PB[plan]


def role_to_pb(role: Role) -> auth_pb2.Role.ValueType:
    return _ROLE_TO_PB[role]


def plan_from_pb(value: int) -> Plan | None:
    """None for PLAN_UNSPECIFIED or an unknown number."""
    return next((plan for plan, number in _PLAN_TO_PB.items() if number == value), None)


def role_from_pb(value: int) -> Role | None:
    return next((role for role, number in _ROLE_TO_PB.items() if number == value), None)
