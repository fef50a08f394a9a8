"""Who is calling: the access token in the gRPC metadata, verified against auth's JWKS
(aether_common.auth_jwks); `require_caller` refuses a call that came without one and says whether
the caller is an admin of charts (imports).

Services calling as themselves (a service token, `identity.is_service`: the alerts engine asking
for indicators) may read with the `charts:read` permission and are never admins: ImportBars stays
a person's act."""

from __future__ import annotations

from dataclasses import dataclass

from aether_common.errors import Forbidden, Unauthenticated
from aether_common.identity import current_identity


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    admin: bool = False
    service: bool = False


SERVICE_READ_PERMISSION = "charts:read"


def require_caller(*, admin_role: str, admin_permission: str) -> Caller:
    """The verified caller of the current RPC; UNAUTHENTICATED when the call had no token."""
    identity = current_identity()
    if identity.user_id is None:
        raise Unauthenticated("this call needs an access token (authorization: Bearer ...)")
    if identity.is_service:
        if not identity.has_permission(SERVICE_READ_PERMISSION):
            raise Forbidden(
                f"service {identity.service_name!r} lacks the {SERVICE_READ_PERMISSION!r} "
                "permission (AUTH_SERVICE_CLIENTS)"
            )
        return Caller(identity.user_id, admin=False, service=True)
    admin = identity.has_role(admin_role) or identity.has_permission(admin_permission)
    return Caller(identity.user_id, admin=admin)
