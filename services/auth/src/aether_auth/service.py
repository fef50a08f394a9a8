"""The auth service's business rules. Transport-free: the boundary passes a unit of work (the
open transaction) and, for caller RPCs, the verified access-token claims of the caller.

Refusals that must leave a trace (failed logins, lockouts, refresh-token re-use) raise
`KeepWrites(error)`: their events and revocations commit, then the caller gets `error`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

import asyncpg

from aether_auth import mfa, repository
from aether_auth.challenges import MfaChallenges
from aether_auth.client_info import ClientInfo
from aether_auth.config import AuthSettings
from aether_auth.crypto import SecretBox, random_token, token_hash
from aether_auth.emails import AccountEmails
from aether_auth.events import UserEvents
from aether_auth.export import DataExport
from aether_auth.metrics import LOCKOUTS, REFRESH_TOKEN_REUSE, SIGN_INS
from aether_auth.oidc import OAuthStates, OidcIdentity, OidcProviders, new_pending_login
from aether_auth.passwords import Passwords, policy_violation
from aether_auth.rbac import USERS_ADMIN, Plan, Role, permissions_for
from aether_auth.repository import UserRecord
from aether_auth.sessions import MAX_IP, MAX_USER_AGENT, IssuedTokens, Sessions
from aether_auth.throttle import Cooldown, LoginThrottle
from aether_auth.tokens import AccessClaims
from aether_auth.validation import FieldErrors, display_name, email_field, normalize_email, required
from aether_common.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    RateLimited,
    Unauthenticated,
    ValidationFailed,
)
from aether_common.logging import get_logger
from aether_common.postgres import UnitOfWork
from aether_common.unit_of_work import KeepWrites

INVALID_CREDENTIALS = "invalid email or password"
VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"  # noqa: S105 (a purpose name, not a secret)
TOTP_PURPOSE = "totp-secret"
RECOVERY_PURPOSE = "recovery-code"
MFA_METHODS = ("totp", "recovery_code")

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class UserView:
    """A user as answered: the record, its permissions and linked providers."""

    user: UserRecord
    oauth_providers: tuple[str, ...] = ()

    @property
    def permissions(self) -> list[str]:
        return permissions_for(self.user.plan, self.user.role)


@dataclass(frozen=True, slots=True)
class MfaChallengeView:
    token: str
    methods: tuple[str, ...]
    expires_in: int


@dataclass(frozen=True, slots=True)
class SignIn:
    """Tokens, or the MFA challenge to answer first. `created`: OAuth made a new account."""

    tokens: IssuedTokens | None = None
    challenge: MfaChallengeView | None = None
    created: bool = False


@dataclass(frozen=True, slots=True)
class Enrollment:
    secret: str
    otpauth_uri: str
    qr_png: bytes


@dataclass(frozen=True, slots=True)
class SecondFactor:
    totp_code: str = ""
    recovery_code: str = ""


class AuthService:
    def __init__(
        self,
        *,
        settings: AuthSettings,
        passwords: Passwords,
        sessions: Sessions,
        throttle: LoginThrottle,
        cooldown: Cooldown,
        challenges: MfaChallenges,
        emails: AccountEmails,
        box: SecretBox,
        providers: OidcProviders,
        oauth_states: OAuthStates,
        events: UserEvents,
    ) -> None:
        self.settings = settings
        self.passwords = passwords
        self.sessions = sessions
        self.throttle = throttle
        self.cooldown = cooldown
        self.challenges = challenges
        self.emails = emails
        self.box = box
        self.providers = providers
        self.oauth_states = oauth_states
        self.events = events

    # == accounts ==============================================================================
    async def register(
        self, uow: UnitOfWork, *, email: str, password: str, name: str, client: ClientInfo
    ) -> UserView:
        errors = FieldErrors()
        normalized = email_field(errors, email)
        self._check_new_password(errors, password, normalized, "password")
        name = display_name(errors, name)
        errors.raise_if_any()
        password_hash = await self.passwords.hash(password)
        try:
            # A savepoint: the unique violation must not abort the caller's transaction.
            async with uow.conn.transaction():
                user = await repository.insert_user(
                    uow.conn,
                    user_id=uuid.uuid4(),
                    email=normalized,
                    password_hash=password_hash,
                    display_name=name,
                )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                "an account with this email already exists", code="email_taken"
            ) from None
        await uow.emit(
            self.events.registered(str(user.id), user.email, user.plan, "password", client)
        )
        await self.cooldown.acquire(VERIFY_EMAIL, str(user.id), self.settings.mail_cooldown_s)
        await self._mail_verification(uow, user)
        return UserView(user)

    async def get_me(self, uow: UnitOfWork, caller: AccessClaims) -> UserView:
        return await self._view(uow, await self._caller_user(uow, caller))

    async def update_profile(
        self, uow: UnitOfWork, caller: AccessClaims, *, name: str | None
    ) -> UserView:
        user = await self._caller_user(uow, caller, for_update=True)
        if name is not None:
            errors = FieldErrors()
            name = display_name(errors, name)
            errors.raise_if_any()
            user = await repository.set_display_name(uow.conn, user.id, name)
        return await self._view(uow, user)

    async def change_password(
        self, uow: UnitOfWork, caller: AccessClaims, *, current: str, new: str
    ) -> IssuedTokens:
        errors = FieldErrors()
        required(errors, current, "current_password")
        user = await self._caller_user(uow, caller, for_update=True)
        self._check_new_password(errors, new, user.email, "new_password")
        errors.raise_if_any()
        await self._require_password(uow, user, current, field="current_password")
        await repository.set_password_hash(uow.conn, user.id, await self.passwords.hash(new))
        await self.sessions.revoke_all(uow, user.id, "password_changed")
        await uow.emit(self.events.password_changed(str(user.id), "change"))
        # The calling session continues in a fresh family; every other one is gone.
        session = await self._session_method(uow, caller)
        return await self.sessions.start(uow, user, session[0], session[1])

    # == sign-in ===============================================================================
    async def login(
        self, uow: UnitOfWork, *, email: str, password: str, client: ClientInfo
    ) -> SignIn:
        errors = FieldErrors()
        normalized = email_field(errors, email)
        required(errors, password, "password")
        errors.raise_if_any()
        await self._refuse_if_throttled(uow, normalized, client)
        user = await repository.get_user_by_email(uow.conn, normalized)
        if user is None or user.password_hash is None:
            await self.passwords.verify_nothing(password)
            await self._password_failed(uow, normalized, user, client)
        check = await self.passwords.verify(user.password_hash, password)
        if not check.ok:
            await self._password_failed(uow, normalized, user, client)
        if check.needs_rehash:  # the configured argon2 parameters changed since
            new_hash = await self.passwords.hash(password)
            user = await repository.set_password_hash(uow.conn, user.id, new_hash, changed=False)
        return await self._signed_in(uow, user, "password", client)

    async def complete_mfa_login(
        self, uow: UnitOfWork, *, challenge_token: str, factor: SecondFactor, client: ClientInfo
    ) -> IssuedTokens:
        challenge = await self.challenges.get(challenge_token)
        if challenge is None:
            raise Unauthenticated(
                "MFA challenge is invalid or expired; sign in again", code="invalid_challenge"
            )
        user = await repository.get_user(uow.conn, uuid.UUID(challenge.user_id))
        if user is None or not user.mfa_enabled:
            await self.challenges.consume(challenge_token)
            raise Unauthenticated("MFA challenge is no longer valid; sign in again")
        await self._refuse_if_throttled(uow, user.email, client, user=user)
        method = await self._second_factor(uow, user, factor, client)
        if method is None:
            left = await self.challenges.record_wrong_code(challenge_token)
            outcome = await self.throttle.record_failure(user.email, client.ip)
            await self._record_login(uow, user, "mfa", False, "bad_mfa_code", client)
            await uow.emit(
                self.events.login_failed(str(user.id), user.email, "bad_mfa_code", client)
            )
            SIGN_INS.labels("mfa", "bad_mfa_code").inc()
            if outcome.locked_now:
                LOCKOUTS.inc()
                await uow.emit(self.events.locked_out(str(user.id), outcome.lock_seconds, client))
                raise KeepWrites(self._locked(outcome.lock_seconds))
            hint = "" if left else "; sign in again"
            raise KeepWrites(Unauthenticated(f"invalid MFA code{hint}", code="invalid_mfa_code"))
        if not await self.challenges.consume(challenge_token):
            raise Unauthenticated("MFA challenge was already used", code="invalid_challenge")
        await self.throttle.clear(user.email)
        tokens = await self.sessions.start(uow, user, f"{challenge.first_factor}+{method}", client)
        await self._record_login(uow, user, method, True, "", client)
        await uow.emit(self.events.logged_in(str(user.id), method, tokens.session_id, client))
        SIGN_INS.labels("mfa", "success").inc()
        return tokens

    async def refresh(
        self, uow: UnitOfWork, *, refresh_token: str, client: ClientInfo
    ) -> IssuedTokens:
        if not refresh_token:
            raise ValidationFailed(
                "refresh_token is required", field_errors={"refresh_token": "is required"}
            )
        token = await repository.lock_refresh_token(uow.conn, token_hash(refresh_token))
        if token is None or token.expires_at <= datetime.now(UTC):
            raise Unauthenticated("refresh token is invalid or expired", code="invalid_grant")
        if token.session_revoked_at is not None:
            raise Unauthenticated("this session has been signed out", code="session_revoked")
        if token.rotated_at is not None:
            # A rotated token came back: it was copied. Whoever holds the family loses it.
            REFRESH_TOKEN_REUSE.inc()
            await self.sessions.revoke(uow, token.session_id, "refresh_token_reuse")
            await uow.emit(
                self.events.token_reuse_detected(str(token.user_id), str(token.session_id), client)
            )
            raise KeepWrites(
                Unauthenticated(
                    "refresh token was already used; the session has been revoked",
                    code="token_reused",
                )
            )
        user = await repository.get_user(uow.conn, token.user_id)
        if user is None:
            raise Unauthenticated("refresh token is invalid or expired", code="invalid_grant")
        await repository.mark_refresh_token_rotated(uow.conn, token_hash(refresh_token))
        return await self.sessions.issue(uow, user, token.session_id)

    async def logout(self, uow: UnitOfWork, caller: AccessClaims, *, refresh_token: str) -> None:
        user_id = uuid.UUID(caller.sub)
        await self.sessions.revoke(uow, uuid.UUID(caller.sid), "logout", user_id=user_id)
        await self.sessions.revocations.revoke_token(caller.jti, caller.exp)
        if refresh_token:
            other = await repository.session_of_token(uow.conn, token_hash(refresh_token))
            if other is not None:  # only the caller's own: user_id restricts it
                await self.sessions.revoke(uow, other, "logout", user_id=user_id)

    # == MFA ===================================================================================
    async def begin_mfa_enrollment(self, uow: UnitOfWork, caller: AccessClaims) -> Enrollment:
        user = await self._caller_user(uow, caller, for_update=True)
        if not user.email_verified:
            raise PreconditionFailed(
                "verify your email first: MFA needs a verified email address",
                code="email_not_verified",
            )
        if user.mfa_enabled:
            raise PreconditionFailed("MFA is already enabled", code="mfa_already_enabled")
        secret = mfa.new_totp_secret()
        await repository.put_pending_totp(
            uow.conn, user.id, self.box.encrypt(TOTP_PURPOSE, secret.encode(), user.id.bytes)
        )
        uri = mfa.otpauth_uri(secret, user.email, self.settings.mfa_issuer_name)
        return Enrollment(secret=secret, otpauth_uri=uri, qr_png=mfa.qr_png(uri))

    async def confirm_mfa_enrollment(
        self, uow: UnitOfWork, caller: AccessClaims, *, totp_code: str
    ) -> list[str]:
        user = await self._caller_user(uow, caller, for_update=True)
        if user.mfa_enabled:
            raise PreconditionFailed("MFA is already enabled", code="mfa_already_enabled")
        pending = await repository.get_totp(uow.conn, user.id, for_update=True)
        if pending is None:
            raise PreconditionFailed("start MFA enrolment first", code="mfa_not_started")
        if not totp_code.strip():
            raise ValidationFailed(
                "totp_code is required", field_errors={"totp_code": "is required"}
            )
        secret = self.box.decrypt(TOTP_PURPOSE, pending.secret_enc, user.id.bytes).decode()
        step = mfa.match_totp(secret, totp_code, last_used_step=pending.last_used_step)
        if step is None:
            raise ValidationFailed(
                "the code does not match; check the authenticator app's clock",
                field_errors={"totp_code": "does not match"},
            )
        await repository.record_totp_use(uow.conn, user.id, step, confirm=True)
        codes = mfa.new_recovery_codes()
        await repository.replace_recovery_codes(
            uow.conn, user.id, [self._recovery_hash(code) for code in codes]
        )
        await repository.set_mfa_enabled(uow.conn, user.id, True)
        await uow.emit(self.events.mfa_changed(str(user.id), True))
        return codes

    async def disable_mfa(
        self, uow: UnitOfWork, caller: AccessClaims, *, factor: SecondFactor
    ) -> None:
        user = await self._caller_user(uow, caller, for_update=True)
        if not user.mfa_enabled:
            raise PreconditionFailed("MFA is not enabled", code="mfa_not_enabled")
        if await self._second_factor(uow, user, factor, ClientInfo()) is None:
            raise Forbidden("invalid MFA code", code="invalid_mfa_code")
        await repository.delete_mfa(uow.conn, user.id)
        await repository.set_mfa_enabled(uow.conn, user.id, False)
        await uow.emit(self.events.mfa_changed(str(user.id), False))

    # == mailed links ==========================================================================
    async def send_email_verification(self, uow: UnitOfWork, caller: AccessClaims) -> None:
        user = await self._caller_user(uow, caller)
        if user.email_verified:
            raise PreconditionFailed("email is already verified", code="already_verified")
        wait = await self.cooldown.acquire(
            VERIFY_EMAIL, str(user.id), self.settings.mail_cooldown_s
        )
        if wait:
            raise RateLimited(
                f"a verification mail was just sent; retry in {wait} s", retry_after=wait
            )
        await self._mail_verification(uow, user)

    async def verify_email(self, uow: UnitOfWork, *, token: str) -> UserView:
        record = await self._take_mail_token(uow, token, VERIFY_EMAIL, "verification")
        user = await repository.get_user(uow.conn, record.user_id, for_update=True)
        if user is None or user.email != record.email:
            raise ValidationFailed(
                "this verification link is for an address the account no longer uses",
                field_errors={"token": "is for another address"},
            )
        await repository.use_email_tokens(uow.conn, user.id, VERIFY_EMAIL)
        if not user.email_verified:
            user = await repository.set_email_verified(uow.conn, user.id)
            await uow.emit(self.events.email_verified(str(user.id), user.email))
        return await self._view(uow, user)

    async def request_password_reset(self, uow: UnitOfWork, *, email: str) -> None:
        try:
            normalized = normalize_email(email)
        except ValueError as exc:
            raise ValidationFailed(f"email {exc}", field_errors={"email": str(exc)}) from None
        # Whatever happens next, the answer is the same: no account enumeration.
        user = await repository.get_user_by_email(uow.conn, normalized)
        if user is None:
            return
        if await self.cooldown.acquire(RESET_PASSWORD, normalized, self.settings.mail_cooldown_s):
            return
        token = random_token()
        await repository.insert_email_token(
            uow.conn,
            token_hash=token_hash(token),
            user_id=user.id,
            purpose=RESET_PASSWORD,
            email=user.email,
            expires_at=_in(self.settings.reset_password_ttl_s),
        )

        async def send() -> None:
            await self.emails.send_password_reset(user.email, token)

        uow.after_commit(send)

    async def reset_password(self, uow: UnitOfWork, *, token: str, new_password: str) -> None:
        record = await self._take_mail_token(uow, token, RESET_PASSWORD, "password reset")
        user = await repository.get_user(uow.conn, record.user_id, for_update=True)
        if user is None or user.email != record.email:
            raise ValidationFailed(
                "this reset link is for an address the account no longer uses",
                field_errors={"token": "is for another address"},
            )
        errors = FieldErrors()
        self._check_new_password(errors, new_password, user.email, "new_password")
        errors.raise_if_any()
        await repository.use_email_tokens(uow.conn, user.id, RESET_PASSWORD)
        await repository.set_password_hash(
            uow.conn, user.id, await self.passwords.hash(new_password)
        )
        await self.sessions.revoke_all(uow, user.id, "password_reset")
        await uow.emit(self.events.password_changed(str(user.id), "reset"))
        if not user.email_verified:  # the mail reached its owner: that proves the address
            await repository.set_email_verified(uow.conn, user.id)
            await uow.emit(self.events.email_verified(str(user.id), user.email))
        await self.throttle.clear(user.email)

    # == OAuth / OIDC ==========================================================================
    def oauth_providers(self) -> list[tuple[str, str]]:
        return [(c.name, c.config.label) for c in self.providers.all()]

    async def start_oauth(self, *, provider: str, redirect_uri: str) -> tuple[str, str]:
        client = self.providers.get(provider)
        if redirect_uri not in client.config.redirect_uris:
            raise ValidationFailed(
                "redirect_uri is not registered for this provider",
                field_errors={"redirect_uri": "is not one of the provider's redirect URIs"},
            )
        await client.metadata()  # an unreachable provider fails before a state is stored
        login = new_pending_login(provider, redirect_uri)
        state = await self.oauth_states.put(login)
        return await client.authorization_url(redirect_uri, state, login), state

    async def finish_oauth(
        self, uow: UnitOfWork, *, provider: str, code: str, state: str, client: ClientInfo
    ) -> SignIn:
        errors = FieldErrors()
        required(errors, code, "code")
        required(errors, state, "state")
        errors.raise_if_any()
        oidc = self.providers.get(provider)
        login = await self.oauth_states.take(state)
        if login is None or login.provider != provider:
            raise Unauthenticated(
                "OAuth state is invalid, expired or already used; start again",
                code="invalid_state",
            )
        id_token = await oidc.exchange_code(code, login)
        identity = await oidc.validate_id_token(id_token, login.nonce)
        user, created = await self._oauth_account(uow, identity, client)
        signed_in = await self._signed_in(uow, user, f"oauth:{provider}", client)
        return SignIn(signed_in.tokens, signed_in.challenge, created)

    async def _oauth_account(
        self, uow: UnitOfWork, identity: OidcIdentity, client: ClientInfo
    ) -> tuple[UserRecord, bool]:
        """The account this identity signs in to: linked before, linked now by verified email,
        or created."""
        linked = await repository.get_identity(uow.conn, identity.provider, identity.subject)
        if linked is not None:
            user = await repository.get_user(uow.conn, linked.user_id)
            if user is not None:
                return user, False
        try:
            email = normalize_email(identity.email)
        except ValueError:
            raise PreconditionFailed(
                f"{identity.provider} did not share a usable email address",
                code="oauth_email_missing",
            ) from None
        user = await repository.get_user_by_email(uow.conn, email, for_update=True)
        if user is not None:
            if not identity.email_verified:
                raise PreconditionFailed(
                    f"an account with this email exists, and {identity.provider} has not "
                    "verified the address: sign in with your password instead",
                    code="oauth_email_unverified",
                )
            if not user.email_verified:
                # Nobody proved the local account owns this address, so its password may be
                # an attacker's (pre-account takeover): the verified owner keeps the account.
                await self.sessions.revoke_all(uow, user.id, "oauth_claimed")
                await repository.set_password_hash(uow.conn, user.id, None)
                user = await repository.set_email_verified(uow.conn, user.id)
                await uow.emit(self.events.email_verified(str(user.id), user.email))
            await repository.insert_identity(
                uow.conn,
                provider=identity.provider,
                subject=identity.subject,
                user_id=user.id,
                email=email,
            )
            return user, False
        errors = FieldErrors()
        name = display_name(errors, identity.name)
        user = await repository.insert_user(
            uow.conn,
            user_id=uuid.uuid4(),
            email=email,
            password_hash=None,
            display_name="" if errors.errors else name,
            email_verified=identity.email_verified,
        )
        await repository.insert_identity(
            uow.conn,
            provider=identity.provider,
            subject=identity.subject,
            user_id=user.id,
            email=email,
        )
        method = f"oauth:{identity.provider}"
        await uow.emit(self.events.registered(str(user.id), email, user.plan, method, client))
        return user, True

    # == administration and GDPR ===============================================================
    async def set_user_access(
        self,
        uow: UnitOfWork,
        caller: AccessClaims,
        *,
        user_id: uuid.UUID,
        plan: Plan | None,
        role: Role | None,
    ) -> UserView:
        if USERS_ADMIN not in caller.perms:
            raise Forbidden(f"missing permission: {USERS_ADMIN}", metadata={"missing": USERS_ADMIN})
        # The token says admin; the database must agree (a demoted admin's token may live on).
        admin = await self._caller_user(uow, caller)
        if USERS_ADMIN not in permissions_for(admin.plan, admin.role):
            raise Forbidden(f"missing permission: {USERS_ADMIN}", metadata={"missing": USERS_ADMIN})
        if plan is None and role is None:
            raise ValidationFailed(
                "give a plan or a role to change",
                field_errors={"plan": "is unspecified", "role": "is unspecified"},
            )
        target = await repository.get_user(uow.conn, user_id, for_update=True)
        if target is None:
            raise NotFound("no such user", code="user_not_found")
        return await self.change_access(uow, target, plan=plan, role=role, changed_by=str(admin.id))

    async def change_access(
        self,
        uow: UnitOfWork,
        target: UserRecord,
        *,
        plan: Plan | None,
        role: Role | None,
        changed_by: str,
    ) -> UserView:
        """Also the operator CLI's `promote`."""
        new_plan, new_role = plan or target.plan, role or target.role
        if (new_plan, new_role) == (target.plan, target.role):
            return await self._view(uow, target)
        updated = await repository.set_access(uow.conn, target.id, new_plan, new_role)
        before = set(permissions_for(target.plan, target.role))
        if not before <= set(permissions_for(new_plan, new_role)):
            # Lost permissions must not live on in tokens: sign the user out everywhere.
            await self.sessions.revoke_all(uow, target.id, "access_reduced")
        await uow.emit(
            self.events.role_changed(
                str(target.id), changed_by, (target.plan, target.role), (new_plan, new_role)
            )
        )
        return await self._view(uow, updated)

    async def export_my_data(self, uow: UnitOfWork, user_id: str) -> str:
        """`user_id`: the caller's own, or the one a trusted service acts for (callers.py)."""
        user = await self._user_by_id(uow, user_id)
        conn = uow.conn
        document = DataExport.of(
            user,
            totp=await repository.get_totp(conn, user.id),
            recovery_codes_left=await repository.recovery_codes_left(conn, user.id),
            sessions=await repository.list_sessions(conn, user.id),
            identities=await repository.list_identities(conn, user.id),
            logins=await repository.list_logins(conn, user.id),
        )
        return document.model_dump_json(indent=2)

    async def delete_my_account(
        self, uow: UnitOfWork, caller: AccessClaims, *, password: str
    ) -> None:
        user = await self._caller_user(uow, caller, for_update=True)
        if user.password_hash is not None:
            if not password:
                raise ValidationFailed(
                    "password is required to delete the account",
                    field_errors={"password": "is required"},
                )
            await self._require_password(uow, user, password, field="password")
        await self.sessions.revoke_all(uow, user.id, "account_deleted")
        await repository.delete_user(uow.conn, user.id)
        # No token of a deleted account may work again, whatever its session.
        await self.sessions.revocations.revoke_user_tokens(str(user.id), int(time.time()) + 1)
        await uow.emit(self.events.deleted(str(user.id)))
        log.info("account deleted", user_id=str(user.id))

    # == helpers ===============================================================================
    def _check_new_password(
        self, errors: FieldErrors, password: str, email: str, field: str
    ) -> None:
        if not password:
            errors.add(field, "is required")
            return
        problem = policy_violation(
            password, email=email, min_length=self.settings.password_min_length
        )
        if problem:
            errors.add(field, problem)

    async def _caller_user(
        self, uow: UnitOfWork, caller: AccessClaims, *, for_update: bool = False
    ) -> UserRecord:
        return await self._user_by_id(uow, caller.sub, for_update=for_update)

    async def _user_by_id(
        self, uow: UnitOfWork, user_id: str, *, for_update: bool = False
    ) -> UserRecord:
        try:
            key = uuid.UUID(user_id)
        except ValueError:  # a delegate may name anything: no such account here
            key = None
        user = (
            None if key is None else await repository.get_user(uow.conn, key, for_update=for_update)
        )
        if user is None:
            raise Unauthenticated("this account no longer exists", code="account_deleted")
        return user

    async def _view(self, uow: UnitOfWork, user: UserRecord) -> UserView:
        identities = await repository.list_identities(uow.conn, user.id)
        return UserView(user, tuple(sorted({i.provider for i in identities})))

    async def _session_method(
        self, uow: UnitOfWork, caller: AccessClaims
    ) -> tuple[str, ClientInfo]:
        sessions = await repository.list_sessions(uow.conn, uuid.UUID(caller.sub))
        current = next((s for s in sessions if str(s.id) == caller.sid), None)
        if current is None:
            return "password", ClientInfo()
        return current.method, ClientInfo(ip=current.ip, user_agent=current.user_agent)

    async def _require_password(
        self, uow: UnitOfWork, user: UserRecord, password: str, *, field: str
    ) -> None:
        """Re-authentication inside a session; wrong guesses count toward the lockout."""
        refusal = await self.throttle.refusal(user.email, "")
        if refusal is not None:
            raise self._locked(refusal.retry_after)
        if user.password_hash is None:
            raise PreconditionFailed("this account has no password", code="no_password")
        if not (await self.passwords.verify(user.password_hash, password)).ok:
            outcome = await self.throttle.record_failure(user.email, "")
            if outcome.locked_now:
                LOCKOUTS.inc()
                await uow.emit(
                    self.events.locked_out(str(user.id), outcome.lock_seconds, ClientInfo())
                )
                raise KeepWrites(self._locked(outcome.lock_seconds))
            raise Forbidden(f"{field} is incorrect", code="wrong_password")

    async def _refuse_if_throttled(
        self, uow: UnitOfWork, email: str, client: ClientInfo, *, user: UserRecord | None = None
    ) -> None:
        refusal = await self.throttle.refusal(email, client.ip)
        if refusal is None:
            return
        if user is None:
            user = await repository.get_user_by_email(uow.conn, email)
        user_id = str(user.id) if user else ""
        await uow.emit(self.events.login_failed(user_id, email, refusal.reason, client))
        SIGN_INS.labels("password", refusal.reason).inc()
        if refusal.reason == "locked":
            raise KeepWrites(self._locked(refusal.retry_after))
        wait = _minutes(refusal.retry_after)
        raise KeepWrites(
            RateLimited(
                f"too many failed sign-ins from this address; retry in {wait}",
                code="ip_throttled",
                retry_after=refusal.retry_after,
            )
        )

    async def _password_failed(
        self, uow: UnitOfWork, email: str, user: UserRecord | None, client: ClientInfo
    ) -> NoReturn:
        outcome = await self.throttle.record_failure(email, client.ip)
        user_id = str(user.id) if user else ""
        events = [self.events.login_failed(user_id, email, "bad_credentials", client)]
        if user is not None:
            await self._record_login(uow, user, "password", False, "bad_credentials", client)
        if outcome.locked_now:
            LOCKOUTS.inc()
            SIGN_INS.labels("password", "locked").inc()
            if user is not None:
                events.append(self.events.locked_out(user_id, outcome.lock_seconds, client))
            await uow.emit(*events)
            raise KeepWrites(self._locked(outcome.lock_seconds))
        SIGN_INS.labels("password", "bad_credentials").inc()
        await uow.emit(*events)
        raise KeepWrites(Unauthenticated(INVALID_CREDENTIALS, code="invalid_credentials"))

    @staticmethod
    def _locked(retry_after: int) -> RateLimited:
        return RateLimited(
            f"too many failed sign-in attempts; try again in {_minutes(retry_after)}",
            code="account_locked",
            retry_after=retry_after,
        )

    async def _signed_in(
        self, uow: UnitOfWork, user: UserRecord, method: str, client: ClientInfo
    ) -> SignIn:
        """The first factor passed: tokens, or a challenge when MFA is on."""
        if user.mfa_enabled:
            SIGN_INS.labels(method, "mfa_required").inc()
            token = await self.challenges.create(str(user.id), method)
            return SignIn(challenge=MfaChallengeView(token, MFA_METHODS, self.challenges.ttl_s))
        await self.throttle.clear(user.email)
        tokens = await self.sessions.start(uow, user, method, client)
        await self._record_login(uow, user, method, True, "", client)
        await uow.emit(self.events.logged_in(str(user.id), method, tokens.session_id, client))
        SIGN_INS.labels(method, "success").inc()
        return SignIn(tokens=tokens)

    async def _second_factor(
        self, uow: UnitOfWork, user: UserRecord, factor: SecondFactor, client: ClientInfo
    ) -> str | None:
        """ "mfa_totp" / "mfa_recovery_code" when the code is good (and now spent), else None."""
        if factor.totp_code.strip():
            totp = await repository.get_totp(uow.conn, user.id, for_update=True)
            if totp is None or totp.confirmed_at is None:
                return None
            secret = self.box.decrypt(TOTP_PURPOSE, totp.secret_enc, user.id.bytes).decode()
            step = mfa.match_totp(secret, factor.totp_code, last_used_step=totp.last_used_step)
            if step is None:
                return None
            await repository.record_totp_use(uow.conn, user.id, step)
            return "mfa_totp"
        if factor.recovery_code.strip():
            used = await repository.use_recovery_code(
                uow.conn, user.id, self._recovery_hash(factor.recovery_code)
            )
            if not used:
                return None
            left = await repository.recovery_codes_left(uow.conn, user.id)
            await uow.emit(self.events.recovery_code_used(str(user.id), left, client))
            return "mfa_recovery_code"
        raise ValidationFailed(
            "give a TOTP code or a recovery code",
            field_errors={"code": "a totp_code or recovery_code is required"},
        )

    def _recovery_hash(self, code: str) -> bytes:
        return self.box.keyed_hash(RECOVERY_PURPOSE, mfa.normalize_recovery_code(code))

    async def _record_login(
        self,
        uow: UnitOfWork,
        user: UserRecord,
        method: str,
        success: bool,
        reason: str,
        client: ClientInfo,
    ) -> None:
        await repository.add_login(
            uow.conn,
            user_id=user.id,
            method=method,
            success=success,
            reason=reason,
            ip=client.ip[:MAX_IP],
            user_agent=client.user_agent[:MAX_USER_AGENT],
        )

    async def _mail_verification(self, uow: UnitOfWork, user: UserRecord) -> None:
        token = random_token()
        await repository.insert_email_token(
            uow.conn,
            token_hash=token_hash(token),
            user_id=user.id,
            purpose=VERIFY_EMAIL,
            email=user.email,
            expires_at=_in(self.settings.verify_email_ttl_s),
        )

        async def send() -> None:
            await self.emails.send_email_verification(user.email, token)

        uow.after_commit(send)

    async def _take_mail_token(
        self, uow: UnitOfWork, token: str, purpose: str, what: str
    ) -> repository.EmailTokenRecord:
        if not token:
            raise ValidationFailed("token is required", field_errors={"token": "is required"})
        record = await repository.lock_email_token(uow.conn, token_hash(token), purpose)
        if record is None:
            raise ValidationFailed(
                f"invalid {what} link", code="invalid_token", field_errors={"token": "is invalid"}
            )
        if record.used_at is not None:
            raise ValidationFailed(
                f"this {what} link was already used",
                code="token_used",
                field_errors={"token": "was already used"},
            )
        if record.expires_at <= datetime.now(UTC):
            raise ValidationFailed(
                f"this {what} link has expired; ask for a new one",
                code="token_expired",
                field_errors={"token": "has expired"},
            )
        return record


def _in(seconds: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _minutes(seconds: int) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
