"""The JSON document of ExportMyData (the GDPR export; pydantic): everything the service holds
about a user, and no secret (no password hash, TOTP secret, recovery or refresh token)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from aether_auth.rbac import permissions_for
from aether_auth.repository import (
    IdentityRecord,
    LoginRecord,
    SessionRecord,
    TotpRecord,
    UserRecord,
)


class ExportedUser(BaseModel):
    id: uuid.UUID
    email: str
    email_verified: bool
    display_name: str
    plan: str
    role: str
    permissions: list[str]
    has_password: bool
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime | None


class ExportedMfa(BaseModel):
    enabled: bool
    method: str | None
    enrolled_at: datetime | None
    recovery_codes_left: int


class ExportedSession(BaseModel):
    id: uuid.UUID
    method: str
    ip: str
    user_agent: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None


class ExportedIdentity(BaseModel):
    provider: str
    subject: str
    email: str
    linked_at: datetime


class ExportedLogin(BaseModel):
    at: datetime
    method: str
    success: bool
    reason: str
    ip: str
    user_agent: str


# Bumped when a field changes meaning or goes away (adding one keeps it).
VERSION = 1


class DataExport(BaseModel):
    service: Literal["auth"] = "auth"
    version: int = VERSION
    exported_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    user: ExportedUser
    mfa: ExportedMfa
    sessions: list[ExportedSession]
    oauth_identities: list[ExportedIdentity]
    login_history: list[ExportedLogin]

    @classmethod
    def of(
        cls,
        user: UserRecord,
        *,
        totp: TotpRecord | None,
        recovery_codes_left: int,
        sessions: Sequence[SessionRecord],
        identities: Sequence[IdentityRecord],
        logins: Sequence[LoginRecord],
    ) -> DataExport:
        return cls(
            user=ExportedUser(
                id=user.id,
                email=user.email,
                email_verified=user.email_verified,
                display_name=user.display_name,
                plan=user.plan.value,
                role=user.role.value,
                permissions=permissions_for(user.plan, user.role),
                has_password=user.password_hash is not None,
                created_at=user.created_at,
                updated_at=user.updated_at,
                password_changed_at=user.password_changed_at,
            ),
            mfa=ExportedMfa(
                enabled=user.mfa_enabled,
                method="totp" if user.mfa_enabled else None,
                enrolled_at=totp.confirmed_at if totp else None,
                recovery_codes_left=recovery_codes_left,
            ),
            sessions=[
                ExportedSession(
                    id=s.id,
                    method=s.method,
                    ip=s.ip,
                    user_agent=s.user_agent,
                    created_at=s.created_at,
                    last_used_at=s.last_used_at,
                    expires_at=s.expires_at,
                    revoked_at=s.revoked_at,
                    revoked_reason=s.revoked_reason,
                )
                for s in sessions
            ],
            oauth_identities=[
                ExportedIdentity(
                    provider=i.provider, subject=i.subject, email=i.email, linked_at=i.linked_at
                )
                for i in identities
            ],
            login_history=[
                ExportedLogin(
                    at=e.at,
                    method=e.method,
                    success=e.success,
                    reason=e.reason,
                    ip=e.ip,
                    user_agent=e.user_agent,
                )
                for e in logins
            ],
        )
