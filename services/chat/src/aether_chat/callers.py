"""Who is calling: the access token in the gRPC metadata, verified against auth's JWKS
(aether_common.auth_jwks); `require_caller` refuses a call that came without one.
"""

from __future__ import annotations

from dataclasses import dataclass

from aether_common.errors import Unauthenticated
from aether_common.identity import current_identity

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
