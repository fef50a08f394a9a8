"""The events the auth service publishes (docs/events.md): topic = type, key = user id.

Payloads are the messages of protos/aether/auth/v1/events.proto. A login failure for an address
with no account has no user id; its key is then the normalised email, so one address's failures
stay in order.
"""

from __future__ import annotations

from google.protobuf.message import Message

from aether.auth.v1 import auth_pb2, events_pb2
from aether_auth.client_info import ClientInfo
from aether_auth.rbac import Plan, Role, plan_to_pb, role_to_pb
from aether_common.events import Event, TopicSpec

SOURCE = "auth"

REGISTERED = "aether.user.registered.v1"
LOGGED_IN = "aether.user.logged_in.v1"
LOGIN_FAILED = "aether.user.login_failed.v1"
LOCKED_OUT = "aether.user.locked_out.v1"
MFA_ENABLED = "aether.user.mfa_enabled.v1"
MFA_DISABLED = "aether.user.mfa_disabled.v1"
RECOVERY_CODE_USED = "aether.user.recovery_code_used.v1"
ROLE_CHANGED = "aether.user.role_changed.v1"
PASSWORD_CHANGED = "aether.user.password_changed.v1"  # noqa: S105 (a topic)
EMAIL_VERIFIED = "aether.user.email_verified.v1"
TOKEN_REUSE_DETECTED = "aether.user.token_reuse_detected.v1"  # noqa: S105 (a topic)
DELETED = "aether.user.deleted.v1"

TOPICS = (
    REGISTERED,
    LOGGED_IN,
    LOGIN_FAILED,
    LOCKED_OUT,
    MFA_ENABLED,
    MFA_DISABLED,
    RECOVERY_CODE_USED,
    ROLE_CHANGED,
    PASSWORD_CHANGED,
    EMAIL_VERIFIED,
    TOKEN_REUSE_DETECTED,
    DELETED,
)


def topic_specs(prefix: str = "") -> list[TopicSpec]:
    return [TopicSpec(prefix + topic) for topic in TOPICS]


AnyEvent = Event[Message]


class UserEvents:
    """Builds each event with its topic (prefixed in tests), key and payload."""

    def __init__(self, topic_prefix: str = "") -> None:
        self.prefix = topic_prefix

    def _event(self, topic: str, subject: str, payload: Message) -> AnyEvent:
        return Event(type=self.prefix + topic, subject=subject, payload=payload, source=SOURCE)

    def registered(
        self, user_id: str, email: str, plan: Plan, method: str, client: ClientInfo
    ) -> AnyEvent:
        payload = events_pb2.UserRegistered(
            user_id=user_id,
            email=email,
            plan=plan_to_pb(plan),
            method=method,
            client=_client_pb(client),
        )
        return self._event(REGISTERED, user_id, payload)

    def logged_in(self, user_id: str, method: str, session_id: str, client: ClientInfo) -> AnyEvent:
        payload = events_pb2.UserLoggedIn(
            user_id=user_id, method=method, session_id=session_id, client=_client_pb(client)
        )
        return self._event(LOGGED_IN, user_id, payload)

    def login_failed(self, user_id: str, email: str, reason: str, client: ClientInfo) -> AnyEvent:
        payload = events_pb2.UserLoginFailed(
            user_id=user_id, email=email, reason=reason, client=_client_pb(client)
        )
        return self._event(LOGIN_FAILED, user_id or email, payload)

    def locked_out(self, user_id: str, lock_seconds: int, client: ClientInfo) -> AnyEvent:
        payload = events_pb2.UserLockedOut(
            user_id=user_id, lock_seconds=lock_seconds, client=_client_pb(client)
        )
        return self._event(LOCKED_OUT, user_id, payload)

    def mfa_changed(self, user_id: str, enabled: bool) -> AnyEvent:
        payload = events_pb2.UserMfaChanged(user_id=user_id, enabled=enabled)
        return self._event(MFA_ENABLED if enabled else MFA_DISABLED, user_id, payload)

    def recovery_code_used(self, user_id: str, codes_left: int, client: ClientInfo) -> AnyEvent:
        payload = events_pb2.UserRecoveryCodeUsed(
            user_id=user_id, codes_left=codes_left, client=_client_pb(client)
        )
        return self._event(RECOVERY_CODE_USED, user_id, payload)

    def role_changed(
        self,
        user_id: str,
        changed_by: str,
        old: tuple[Plan, Role],
        new: tuple[Plan, Role],
    ) -> AnyEvent:
        payload = events_pb2.UserRoleChanged(
            user_id=user_id,
            changed_by=changed_by,
            old_plan=plan_to_pb(old[0]),
            new_plan=plan_to_pb(new[0]),
            old_role=role_to_pb(old[1]),
            new_role=role_to_pb(new[1]),
        )
        return self._event(ROLE_CHANGED, user_id, payload)

    def password_changed(self, user_id: str, method: str) -> AnyEvent:
        payload = events_pb2.UserPasswordChanged(user_id=user_id, method=method)
        return self._event(PASSWORD_CHANGED, user_id, payload)

    def email_verified(self, user_id: str, email: str) -> AnyEvent:
        payload = events_pb2.UserEmailVerified(user_id=user_id, email=email)
        return self._event(EMAIL_VERIFIED, user_id, payload)

    def token_reuse_detected(self, user_id: str, session_id: str, client: ClientInfo) -> AnyEvent:
        payload = events_pb2.UserTokenReuseDetected(
            user_id=user_id, session_id=session_id, client=_client_pb(client)
        )
        return self._event(TOKEN_REUSE_DETECTED, user_id, payload)

    def deleted(self, user_id: str) -> AnyEvent:
        return self._event(DELETED, user_id, events_pb2.UserDeleted(user_id=user_id))


def _client_pb(client: ClientInfo) -> auth_pb2.ClientInfo:
    return auth_pb2.ClientInfo(ip=client.ip, user_agent=client.user_agent)
