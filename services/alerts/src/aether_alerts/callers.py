"""Who is calling: the access token in the gRPC metadata, verified against auth's JWKS
(aether_common.auth_jwks); `require_caller` refuses a call that came without one and says the
caller's plan and whether they are an admin (the quota of active rules depends on both).

A service listed in ALERTS_DELEGATING_SERVICES (the worker) may act for a user
(aether_common.delegation): the caller is then that user, with no role and no plan from the
header, so never an admin, and the free plan's quota if it creates rules."""

from __future__ import annotations

from dataclasses import dataclass

from aether_common.errors import Unauthenticated
from aether_common.identity import current_identity


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    plan: str | None = None
    admin: bool = False


def require_caller(*, admin_role: str) -> Caller:
    """The verified caller of the current RPC; UNAUTHENTICATED when the call had no token."""
    identity = current_identity()
    if identity.user_id is None:
        raise Unauthenticated("this call needs an access token (authorization: Bearer ...)")
    return Caller(identity.user_id, plan=identity.plan, admin=identity.has_role(admin_role))
