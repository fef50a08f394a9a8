"""Sessions: a refresh-token family plus the access tokens it issues.

Refresh tokens are opaque random strings; only their SHA-256 is stored. Revoking a session marks
it in PostgreSQL (its refresh tokens stop working) and in the Redis revocation list (its access
tokens stop working at once, not at expiry). Redis is written inside the transaction, before the
commit: if Redis fails the revocation rolls back and the caller retries, and if the commit fails
afterwards the tokens are denied early, which is the safe direction.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aether_auth import repository
from aether_auth.client_info import ClientInfo
from aether_auth.crypto import random_token, token_hash
from aether_auth.repository import UserRecord
from aether_auth.revocation import RevocationList
from aether_auth.tokens import AccessClaims, AccessTokens
from aether_common.postgres import UnitOfWork

MAX_USER_AGENT = 256
MAX_IP = 64


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    claims: AccessClaims

    @property
    def session_id(self) -> str:
        return self.claims.sid


class Sessions:
    def __init__(
        self, tokens: AccessTokens, revocations: RevocationList, *, refresh_ttl_s: int
    ) -> None:
        self.tokens = tokens
        self.revocations = revocations
        self.refresh_ttl_s = refresh_ttl_s

    async def start(
        self, uow: UnitOfWork, user: UserRecord, method: str, client: ClientInfo
    ) -> IssuedTokens:
        """A new session (family) for `user` and its first token pair."""
        session_id = uuid.uuid4()
        await repository.insert_session(
            uow.conn,
            session_id=session_id,
            user_id=user.id,
            method=method,
            ip=client.ip[:MAX_IP],
            user_agent=client.user_agent[:MAX_USER_AGENT],
            expires_at=self._refresh_expiry(),
        )
        return await self.issue(uow, user, session_id)

    async def issue(self, uow: UnitOfWork, user: UserRecord, session_id: uuid.UUID) -> IssuedTokens:
        """A token pair in an existing session (after a rotation)."""
        refresh_token = random_token()
        await repository.insert_refresh_token(
            uow.conn, token_hash(refresh_token), session_id, self._refresh_expiry()
        )
        access_token, claims = self.tokens.issue(user, session_id)
        return IssuedTokens(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=self.tokens.ttl_s,
            refresh_expires_in=self.refresh_ttl_s,
            claims=claims,
        )

    async def revoke(
        self,
        uow: UnitOfWork,
        session_id: uuid.UUID,
        reason: str,
        *,
        user_id: uuid.UUID | None = None,
    ) -> bool:
        revoked = await repository.revoke_session(uow.conn, session_id, reason, user_id=user_id)
        if revoked:
            await self.revocations.revoke_sessions([str(session_id)])
        return revoked

    async def revoke_all(
        self, uow: UnitOfWork, user_id: uuid.UUID, reason: str
    ) -> Sequence[uuid.UUID]:
        """Every session of the user; their access tokens are refused from now on."""
        revoked = await repository.revoke_user_sessions(uow.conn, user_id, reason)
        await self.revocations.revoke_sessions(str(sid) for sid in revoked)
        # Also by issue time, for verifiers that cached nothing about these sessions.
        await self.revocations.revoke_user_tokens(str(user_id), int(time.time()))
        return revoked

    def _refresh_expiry(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.refresh_ttl_s)
