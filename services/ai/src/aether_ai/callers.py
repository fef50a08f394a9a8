"""Who is calling: the access token in the gRPC metadata, verified against auth's JWKS
(aether_common.auth_jwks). Every RPC needs a caller; admin RPCs need the admin role or the
`ai:admin` permission (checked here, not only at the gateway)."""

from __future__ import annotations

from dataclasses import dataclass

from aether_common.errors import Forbidden, Unauthenticated
from aether_common.identity import current_identity

ADMIN_ROLE = "admin"
ADMIN_PERMISSION = "ai:admin"


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    admin: bool = False


def require_caller() -> Caller:
    """The verified caller of the current RPC; UNAUTHENTICATED when the call had no token."""
    identity = current_identity()
    if identity.user_id is None:
        raise Unauthenticated("this call needs an access token (authorization: Bearer ...)")
    admin = identity.has_role(ADMIN_ROLE) or identity.has_permission(ADMIN_PERMISSION)
    return Caller(identity.user_id, admin=admin)


def require_admin() -> Caller:
    caller = require_caller()
    if not caller.admin:
        raise Forbidden(
            f"this call needs the {ADMIN_ROLE} role or the {ADMIN_PERMISSION} permission",
            metadata={"permission": ADMIN_PERMISSION},
        )
    return caller
