"""Every query of the auth service. Functions take the unit of work's connection."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aether_auth.rbac import Plan, Role

Conn = Any  # an asyncpg connection (asyncpg ships no type information)

# Some statements are assembled from the constant column lists below and a constant lock
# clause (never from input: values always travel as $n parameters), hence `noqa: S608`.

_USER_COLUMNS = (
    "id, email, email_verified, password_hash, display_name, plan, role, mfa_enabled, "
    "created_at, updated_at, password_changed_at"
)


# -- records -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UserRecord:
    id: uuid.UUID
    email: str
    email_verified: bool
    password_hash: str | None
    display_name: str
    plan: Plan
    role: Role
    mfa_enabled: bool
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> UserRecord:
        return cls(
            id=row["id"],
            email=row["email"],
            email_verified=row["email_verified"],
            password_hash=row["password_hash"],
            display_name=row["display_name"],
            plan=Plan(row["plan"]),
            role=Role(row["role"]),
            mfa_enabled=row["mfa_enabled"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            password_changed_at=row["password_changed_at"],
        )


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: uuid.UUID
    user_id: uuid.UUID
    method: str
    ip: str
    user_agent: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    session_id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime
    rotated_at: datetime | None
    session_revoked_at: datetime | None
    session_method: str


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    kid: str
    algorithm: str
    public_jwk: str
    private_key_enc: bytes
    created_at: datetime
    retired_at: datetime | None
    verify_until: datetime | None


@dataclass(frozen=True, slots=True)
class TotpRecord:
    user_id: uuid.UUID
    secret_enc: bytes
    confirmed_at: datetime | None
    last_used_step: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EmailTokenRecord:
    user_id: uuid.UUID
    purpose: str
    email: str
    expires_at: datetime
    used_at: datetime | None


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    provider: str
    subject: str
    user_id: uuid.UUID
    email: str
    linked_at: datetime


@dataclass(frozen=True, slots=True)
class LoginRecord:
    at: datetime
    method: str
    success: bool
    reason: str
    ip: str
    user_agent: str


# -- users -------------------------------------------------------------------------------------
async def insert_user(
    conn: Conn,
    *,
    user_id: uuid.UUID,
    email: str,
    password_hash: str | None,
    display_name: str,
    email_verified: bool = False,
) -> UserRecord:
    """Raises asyncpg.UniqueViolationError when the email is taken."""
    row = await conn.fetchrow(
        f"""INSERT INTO users (id, email, password_hash, display_name, email_verified,
                               password_changed_at)
            VALUES ($1, $2, $3, $4, $5, CASE WHEN $3::text IS NULL THEN NULL ELSE now() END)
            RETURNING {_USER_COLUMNS}""",  # noqa: S608
        user_id,
        email,
        password_hash,
        display_name,
        email_verified,
    )
    return UserRecord.from_row(row)


async def get_user(
    conn: Conn, user_id: uuid.UUID, *, for_update: bool = False
) -> UserRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1{lock}", user_id)  # noqa: S608
    return UserRecord.from_row(row) if row else None


async def get_user_by_email(
    conn: Conn, email: str, *, for_update: bool = False
) -> UserRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE email = $1{lock}", email)  # noqa: S608
    return UserRecord.from_row(row) if row else None


async def _update_user(conn: Conn, user_id: uuid.UUID, assignments: str, *args: Any) -> UserRecord:
    row = await conn.fetchrow(
        f"UPDATE users SET {assignments}, updated_at = now() WHERE id = $1 "  # noqa: S608
        f"RETURNING {_USER_COLUMNS}",
        user_id,
        *args,
    )
    if row is None:
        raise LookupError(f"user {user_id} vanished inside its transaction")
    return UserRecord.from_row(row)


async def set_display_name(conn: Conn, user_id: uuid.UUID, name: str) -> UserRecord:
    return await _update_user(conn, user_id, "display_name = $2", name)


async def set_password_hash(
    conn: Conn, user_id: uuid.UUID, password_hash: str | None, *, changed: bool = True
) -> UserRecord:
    """`changed=False` for a transparent rehash (same password, new parameters)."""
    if changed:
        return await _update_user(
            conn, user_id, "password_hash = $2, password_changed_at = now()", password_hash
        )
    return await _update_user(conn, user_id, "password_hash = $2", password_hash)


async def set_email_verified(conn: Conn, user_id: uuid.UUID) -> UserRecord:
    return await _update_user(conn, user_id, "email_verified = true")


async def set_access(conn: Conn, user_id: uuid.UUID, plan: Plan, role: Role) -> UserRecord:
    return await _update_user(conn, user_id, "plan = $2, role = $3", plan.value, role.value)


async def set_mfa_enabled(conn: Conn, user_id: uuid.UUID, enabled: bool) -> UserRecord:
    return await _update_user(conn, user_id, "mfa_enabled = $2", enabled)


async def delete_user(conn: Conn, user_id: uuid.UUID) -> bool:
    """Every row that references the user goes with it (ON DELETE CASCADE)."""
    status: str = await conn.execute("DELETE FROM users WHERE id = $1", user_id)
    return status == "DELETE 1"


# -- sessions and refresh tokens ---------------------------------------------------------------
async def insert_session(
    conn: Conn,
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    method: str,
    ip: str,
    user_agent: str,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO sessions (id, user_id, method, ip, user_agent, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        session_id,
        user_id,
        method,
        ip,
        user_agent,
        expires_at,
    )


async def insert_refresh_token(
    conn: Conn, token_hash: bytes, session_id: uuid.UUID, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
        token_hash,
        session_id,
        expires_at,
    )
    await conn.execute(
        "UPDATE sessions SET last_used_at = now(), expires_at = $2 WHERE id = $1",
        session_id,
        expires_at,
    )


async def lock_refresh_token(conn: Conn, token_hash: bytes) -> RefreshTokenRecord | None:
    """The token and its session, locked: concurrent refreshes of one token serialise here."""
    row = await conn.fetchrow(
        """SELECT t.session_id, s.user_id, t.expires_at, t.rotated_at,
                  s.revoked_at AS session_revoked_at, s.method AS session_method
           FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
           WHERE t.token_hash = $1
           FOR UPDATE OF t, s""",
        token_hash,
    )
    if row is None:
        return None
    return RefreshTokenRecord(
        session_id=row["session_id"],
        user_id=row["user_id"],
        expires_at=row["expires_at"],
        rotated_at=row["rotated_at"],
        session_revoked_at=row["session_revoked_at"],
        session_method=row["session_method"],
    )


async def mark_refresh_token_rotated(conn: Conn, token_hash: bytes) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = $1", token_hash
    )


async def revoke_session(
    conn: Conn, session_id: uuid.UUID, reason: str, *, user_id: uuid.UUID | None = None
) -> bool:
    """True when it was active; `user_id` restricts it to that user's sessions."""
    status: str = await conn.execute(
        """UPDATE sessions SET revoked_at = now(), revoked_reason = $2
           WHERE id = $1 AND revoked_at IS NULL AND ($3::uuid IS NULL OR user_id = $3)""",
        session_id,
        reason,
        user_id,
    )
    return status == "UPDATE 1"


async def revoke_user_sessions(
    conn: Conn, user_id: uuid.UUID, reason: str, *, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Revokes every active session of the user but `keep`; returns their ids."""
    rows = await conn.fetch(
        """UPDATE sessions SET revoked_at = now(), revoked_reason = $2
           WHERE user_id = $1 AND revoked_at IS NULL AND ($3::uuid IS NULL OR id <> $3)
           RETURNING id""",
        user_id,
        reason,
        keep,
    )
    return [row["id"] for row in rows]


async def session_of_token(conn: Conn, token_hash: bytes) -> uuid.UUID | None:
    value: uuid.UUID | None = await conn.fetchval(
        "SELECT session_id FROM refresh_tokens WHERE token_hash = $1", token_hash
    )
    return value


async def list_sessions(conn: Conn, user_id: uuid.UUID) -> list[SessionRecord]:
    rows = await conn.fetch(
        """SELECT id, user_id, method, ip, user_agent, created_at, last_used_at, expires_at,
                  revoked_at, revoked_reason
           FROM sessions WHERE user_id = $1 ORDER BY created_at""",
        user_id,
    )
    return [SessionRecord(**dict(row)) for row in rows]


# -- signing keys ------------------------------------------------------------------------------
_KEY_COLUMNS = "kid, algorithm, public_jwk, private_key_enc, created_at, retired_at, verify_until"


async def verifiable_signing_keys(conn: Conn) -> list[SigningKeyRecord]:
    """Keys whose tokens may still be alive, newest first (the first unretired one signs)."""
    rows = await conn.fetch(
        f"""SELECT {_KEY_COLUMNS} FROM signing_keys
            WHERE verify_until IS NULL OR verify_until > now()
            ORDER BY created_at DESC, kid"""  # noqa: S608
    )
    return [SigningKeyRecord(**dict(row)) for row in rows]


async def lock_signing_keys(conn: Conn) -> None:
    """Serialises rotations across replicas (released at commit)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('aether_auth.signing_keys'))")


async def active_signing_key_created(conn: Conn) -> datetime | None:
    value: datetime | None = await conn.fetchval(
        "SELECT max(created_at) FROM signing_keys WHERE retired_at IS NULL"
    )
    return value


async def retire_signing_keys(conn: Conn, verify_for: timedelta) -> list[str]:
    rows = await conn.fetch(
        """UPDATE signing_keys SET retired_at = now(), verify_until = now() + $1::interval
           WHERE retired_at IS NULL RETURNING kid""",
        verify_for,
    )
    return [row["kid"] for row in rows]


async def insert_signing_key(
    conn: Conn, *, kid: str, algorithm: str, public_jwk: str, private_key_enc: bytes
) -> None:
    await conn.execute(
        """INSERT INTO signing_keys (kid, algorithm, public_jwk, private_key_enc)
           VALUES ($1, $2, $3, $4)""",
        kid,
        algorithm,
        public_jwk,
        private_key_enc,
    )


# -- MFA ---------------------------------------------------------------------------------------
async def put_pending_totp(conn: Conn, user_id: uuid.UUID, secret_enc: bytes) -> None:
    await conn.execute(
        """INSERT INTO mfa_totp (user_id, secret_enc) VALUES ($1, $2)
           ON CONFLICT (user_id) DO UPDATE
             SET secret_enc = excluded.secret_enc, created_at = now(), confirmed_at = NULL,
                 last_used_step = 0""",
        user_id,
        secret_enc,
    )


async def get_totp(
    conn: Conn, user_id: uuid.UUID, *, for_update: bool = False
) -> TotpRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        "SELECT user_id, secret_enc, confirmed_at, last_used_step, created_at "  # noqa: S608
        f"FROM mfa_totp WHERE user_id = $1{lock}",
        user_id,
    )
    return TotpRecord(**dict(row)) if row else None


async def record_totp_use(
    conn: Conn, user_id: uuid.UUID, step: int, *, confirm: bool = False
) -> None:
    await conn.execute(
        """UPDATE mfa_totp SET last_used_step = $2,
                  confirmed_at = CASE WHEN $3 THEN now() ELSE confirmed_at END
           WHERE user_id = $1""",
        user_id,
        step,
        confirm,
    )


async def delete_mfa(conn: Conn, user_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM mfa_totp WHERE user_id = $1", user_id)
    await conn.execute("DELETE FROM recovery_codes WHERE user_id = $1", user_id)


async def replace_recovery_codes(
    conn: Conn, user_id: uuid.UUID, code_hashes: Sequence[bytes]
) -> None:
    await conn.execute("DELETE FROM recovery_codes WHERE user_id = $1", user_id)
    await conn.executemany(
        "INSERT INTO recovery_codes (code_hash, user_id) VALUES ($1, $2)",
        [(code_hash, user_id) for code_hash in code_hashes],
    )


async def use_recovery_code(conn: Conn, user_id: uuid.UUID, code_hash: bytes) -> bool:
    status: str = await conn.execute(
        """UPDATE recovery_codes SET used_at = now()
           WHERE code_hash = $1 AND user_id = $2 AND used_at IS NULL""",
        code_hash,
        user_id,
    )
    return status == "UPDATE 1"


async def recovery_codes_left(conn: Conn, user_id: uuid.UUID) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL", user_id
        )
    )


# -- mailed tokens -----------------------------------------------------------------------------
async def insert_email_token(
    conn: Conn,
    *,
    token_hash: bytes,
    user_id: uuid.UUID,
    purpose: str,
    email: str,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO email_tokens (token_hash, user_id, purpose, email, expires_at)
           VALUES ($1, $2, $3, $4, $5)""",
        token_hash,
        user_id,
        purpose,
        email,
        expires_at,
    )


async def lock_email_token(conn: Conn, token_hash: bytes, purpose: str) -> EmailTokenRecord | None:
    row = await conn.fetchrow(
        """SELECT user_id, purpose, email, expires_at, used_at FROM email_tokens
           WHERE token_hash = $1 AND purpose = $2 FOR UPDATE""",
        token_hash,
        purpose,
    )
    return EmailTokenRecord(**dict(row)) if row else None


async def use_email_tokens(conn: Conn, user_id: uuid.UUID, purpose: str) -> None:
    """Marks every open token of that purpose used: one link works, the others die with it."""
    await conn.execute(
        """UPDATE email_tokens SET used_at = now()
           WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL""",
        user_id,
        purpose,
    )


# -- OAuth identities --------------------------------------------------------------------------
async def get_identity(conn: Conn, provider: str, subject: str) -> IdentityRecord | None:
    row = await conn.fetchrow(
        """SELECT provider, subject, user_id, email, linked_at FROM oauth_identities
           WHERE provider = $1 AND subject = $2""",
        provider,
        subject,
    )
    return IdentityRecord(**dict(row)) if row else None


async def insert_identity(
    conn: Conn, *, provider: str, subject: str, user_id: uuid.UUID, email: str
) -> None:
    await conn.execute(
        """INSERT INTO oauth_identities (provider, subject, user_id, email)
           VALUES ($1, $2, $3, $4)""",
        provider,
        subject,
        user_id,
        email,
    )


async def list_identities(conn: Conn, user_id: uuid.UUID) -> list[IdentityRecord]:
    rows = await conn.fetch(
        """SELECT provider, subject, user_id, email, linked_at FROM oauth_identities
           WHERE user_id = $1 ORDER BY provider, linked_at""",
        user_id,
    )
    return [IdentityRecord(**dict(row)) for row in rows]


# -- login history -----------------------------------------------------------------------------
async def add_login(
    conn: Conn,
    *,
    user_id: uuid.UUID,
    method: str,
    success: bool,
    reason: str = "",
    ip: str = "",
    user_agent: str = "",
) -> None:
    await conn.execute(
        """INSERT INTO login_history (user_id, method, success, reason, ip, user_agent)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        user_id,
        method,
        success,
        reason,
        ip,
        user_agent,
    )


async def list_logins(conn: Conn, user_id: uuid.UUID, limit: int = 1000) -> list[LoginRecord]:
    rows = await conn.fetch(
        """SELECT at, method, success, reason, ip, user_agent FROM login_history
           WHERE user_id = $1 ORDER BY at DESC LIMIT $2""",
        user_id,
        limit,
    )
    return [LoginRecord(**dict(row)) for row in rows]


# -- housekeeping ------------------------------------------------------------------------------
async def purge_expired(conn: Conn, *, login_history_older_than: timedelta) -> dict[str, int]:
    """Deletes what can no longer be used nor shown; returns the row counts per table."""
    statements = {
        "refresh_tokens": "DELETE FROM refresh_tokens WHERE expires_at < now()",
        # A session whose last refresh token expired cannot come back.
        "sessions": "DELETE FROM sessions WHERE expires_at < now() - interval '1 day'",
        "email_tokens": "DELETE FROM email_tokens WHERE expires_at < now() - interval '1 day'",
        "signing_keys": "DELETE FROM signing_keys WHERE verify_until < now() - interval '7 days'",
    }
    purged: dict[str, int] = {}
    for table, sql in statements.items():
        status: str = await conn.execute(sql)
        purged[table] = int(status.rsplit(" ", 1)[-1])
    status = await conn.execute(
        "DELETE FROM login_history WHERE at < now() - $1::interval", login_history_older_than
    )
    purged["login_history"] = int(status.rsplit(" ", 1)[-1])
    return purged
