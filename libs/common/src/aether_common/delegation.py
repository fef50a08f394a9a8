"""Delegation: a service acting for a user, long after the user's own token has expired.

A job the worker runs for a user (an `ai.generate`, a `gdpr.export`) must reach other services as
that user, but the worker never keeps user tokens. So it calls with ITS OWN service token
(aether_common.service_tokens) and names the user in the metadata:

    authorization: Bearer <the worker's service token>
    x-aether-on-behalf-of: <user id>

The caller's side: `acting_for(user_id, service=..., token=...)` is the identity to call with
(`use_identity(...)` around the call; the outgoing interceptor sends both entries).

The receiving side: `effective_caller(verified, metadata, trusted=...)` answers who the call is
from, given the identity its verified token gave. A service the receiver lists in `trusted` (ai:
AI_DELEGATING_SERVICES) makes the named user the caller; anyone else naming a user is refused
with PERMISSION_DENIED: a user's token (a user can never pose as another), and a service the
receiver does not list. The user gets no roles, permissions or plan from it: a delegate may do
what the user may do for themselves and nothing an admin may (the header is not signed by auth;
the service's token is, and the receiver trusts that service with its users' ordinary rights).
`DelegatingResolver` applies it where the token is verified (`verifying_server(...,
delegating_services=...)`), so the RPC code sees the user as any other caller, with
`delegated_by` naming the service.

A receiver that does not opt in never reads the header: there a delegated call is the service
itself (`service:worker`). Chat, alerts, memory and ai opt in for the worker (`gdpr.export`,
`ai.generate`); memory, called by ai while it answers for the worker, so sees the user.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from aether_common.errors import Forbidden, ValidationFailed
from aether_common.identity import (
    ON_BEHALF_OF_KEY,
    SERVICE_SUBJECT_PREFIX,
    CallerIdentity,
    IdentityResolver,
)

# What a user id may look like on the wire (auth's are UUIDs; tests use short names).
_USER_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")


def acting_for(user_id: str, *, service: str, token: str) -> CallerIdentity:
    """The identity service `service` calls with to act for `user_id`, with its own `token`."""
    return CallerIdentity(user_id=user_id, access_token=token, delegated_by=service)


def effective_caller(
    verified: CallerIdentity, metadata: Mapping[str, str], *, trusted: Iterable[str]
) -> CallerIdentity:
    """Who the call is from: `verified` (what its token says), or the user it names in
    `x-aether-on-behalf-of` when `verified` is a service listed in `trusted`.

    Raises Forbidden (PERMISSION_DENIED) when a user or an unlisted service names someone, and
    ValidationFailed (INVALID_ARGUMENT, naming the entry) when the named id is not a user's."""
    if ON_BEHALF_OF_KEY not in metadata or not verified.is_authenticated:
        # Anonymous: the RPC refuses the call for want of a token, header or not.
        return verified
    service = verified.service_name
    if service is None:
        raise Forbidden(
            f"{ON_BEHALF_OF_KEY} is for services acting for a user; a user's token cannot use it",
            code="delegation_refused",
        )
    if service not in set(trusted):
        raise Forbidden(
            f"service {service!r} may not act for users here ({ON_BEHALF_OF_KEY})",
            code="delegation_refused",
            metadata={"service": service},
        )
    user_id = metadata[ON_BEHALF_OF_KEY].strip()
    if not _USER_ID.fullmatch(user_id) or user_id.startswith(SERVICE_SUBJECT_PREFIX):
        raise ValidationFailed(
            f"{ON_BEHALF_OF_KEY} must name a user (1-128 of [A-Za-z0-9_.:@-], not a service)",
            field_errors={ON_BEHALF_OF_KEY: "not a user id"},
        )
    return acting_for(user_id, service=service, token=verified.access_token or "")


class DelegatingResolver:
    """An `IdentityResolver` that verifies the token with `inner`, then applies
    `effective_caller` with the services this receiver trusts to act for users."""

    def __init__(self, inner: IdentityResolver, trusted: Iterable[str]) -> None:
        self.inner = inner
        self.trusted = frozenset(trusted)

    async def resolve(self, metadata: Mapping[str, str]) -> CallerIdentity:
        verified = await self.inner.resolve(metadata)
        return effective_caller(verified, metadata, trusted=self.trusted)
