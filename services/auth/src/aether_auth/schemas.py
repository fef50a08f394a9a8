"""The gRPC edge's conversions: auth.v1 messages into the service's records (`ClientInfo`), and
its records (the user, issued tokens, an MFA challenge) into auth.v1 messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from aether.auth.v1 import auth_pb2
from aether_auth.client_info import ClientInfo
from aether_auth.rbac import plan_to_pb, role_to_pb
from aether_auth.service import SignIn, UserView
from aether_auth.sessions import IssuedTokens


def user_pb(view: UserView) -> auth_pb2.User:
    user = view.user
    created = Timestamp()
    created.FromDatetime(user.created_at)
    return auth_pb2.User(
        id=str(user.id),
        email=user.email,
        email_verified=user.email_verified,
        display_name=user.display_name,
        plan=plan_to_pb(user.plan),
        role=role_to_pb(user.role),
        permissions=view.permissions,
        mfa_enabled=user.mfa_enabled,
        created_time=created,
        oauth_providers=list(view.oauth_providers),
    )


def tokens_pb(tokens: IssuedTokens) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        token_type="Bearer",  # noqa: S106 (OAuth token type)
        expires_in=tokens.expires_in,
        refresh_expires_in=tokens.refresh_expires_in,
    )


def client_info(client: auth_pb2.ClientInfo) -> ClientInfo:
    return ClientInfo(ip=client.ip, user_agent=client.user_agent)


def challenge_pb(result: SignIn) -> auth_pb2.MfaChallenge | None:
    if result.challenge is None:
        return None
    return auth_pb2.MfaChallenge(
        challenge_token=result.challenge.token,
        methods=list(result.challenge.methods),
        expires_in=result.challenge.expires_in,
    )
