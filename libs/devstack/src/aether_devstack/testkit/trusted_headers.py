"""FOR TESTS ONLY: an identity resolver that believes the unsigned `x-aether-*` headers of any
caller, so a test server can be called as any user without minting tokens. It lives here, in
the test kit, so that no service can configure it: a caller could claim any user and any
permission."""

from __future__ import annotations

from collections.abc import Mapping

from aether_common.identity import (
    ANONYMOUS,
    PERMISSIONS_KEY,
    PLAN_KEY,
    ROLES_KEY,
    USER_ID_KEY,
    CallerIdentity,
    bearer_token,
)


class TrustedHeadersResolver:
    async def resolve(self, metadata: Mapping[str, str]) -> CallerIdentity:
        user_id = metadata.get(USER_ID_KEY) or None
        if user_id is None:
            return ANONYMOUS
        return CallerIdentity(
            user_id=user_id,
            roles=_split(metadata.get(ROLES_KEY)),
            permissions=_split(metadata.get(PERMISSIONS_KEY)),
            plan=metadata.get(PLAN_KEY) or None,
            access_token=bearer_token(metadata),
        )


def _split(value: str | None) -> frozenset[str]:
    return frozenset(part.strip() for part in (value or "").split(",") if part.strip())
