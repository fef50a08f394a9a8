"""Protobuf messages from auth -> the public JSON models (and the few enums going the other way)."""

from __future__ import annotations

import base64

from aether.auth.v1 import auth_pb2
from aether_gateway.auth import schemas
from aether_gateway.convert import enum_name


def plan_name(value: int) -> str:
    try:
        return enum_name("PLAN_", auth_pb2.Plan.Name(value))  # type: ignore[arg-type]
    except ValueError:  # a value from a newer auth than this gateway knows
        return "unknown"


def role_name(value: int) -> str:
    try:
        return enum_name("ROLE_", auth_pb2.Role.Name(value))  # type: ignore[arg-type]
    except ValueError:
        return "unknown"


def plan_value(name: str | None) -> auth_pb2.Plan.ValueType:
    if name is None:
        return auth_pb2.PLAN_UNSPECIFIED
    return auth_pb2.Plan.Value(f"PLAN_{name.upper()}")


def role_value(name: str | None) -> auth_pb2.Role.ValueType:
    if name is None:
        return auth_pb2.ROLE_UNSPECIFIED
    return auth_pb2.Role.Value(f"ROLE_{name.upper()}")


def user(message: auth_pb2.User) -> schemas.UserOut:
    created = None
    if message.HasField("created_time"):
        created = message.created_time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return schemas.UserOut(
        id=message.id,
        email=message.email,
        email_verified=message.email_verified,
        display_name=message.display_name,
        plan=plan_name(message.plan),
        role=role_name(message.role),
        permissions=list(message.permissions),
        mfa_enabled=message.mfa_enabled,
        created_time=created,
        oauth_providers=list(message.oauth_providers),
    )


def tokens(message: auth_pb2.TokenPair) -> schemas.TokensOut:
    return schemas.TokensOut(
        access_token=message.access_token,
        refresh_token=message.refresh_token,
        token_type=message.token_type or "Bearer",
        expires_in=message.expires_in,
        refresh_expires_in=message.refresh_expires_in,
    )


def challenge(message: auth_pb2.MfaChallenge) -> schemas.MfaChallengeOut:
    return schemas.MfaChallengeOut(
        challenge_token=message.challenge_token,
        methods=list(message.methods),
        expires_in=message.expires_in,
    )


def login(message: auth_pb2.LoginResponse | auth_pb2.FinishOAuthResponse) -> schemas.LoginOut:
    if message.WhichOneof("result") == "mfa_required":
        return schemas.LoginOut(mfa_required=True, challenge=challenge(message.mfa_required))
    return schemas.LoginOut(mfa_required=False, tokens=tokens(message.tokens))


def oauth_login(message: auth_pb2.FinishOAuthResponse) -> schemas.OAuthLoginOut:
    result = login(message)
    return schemas.OAuthLoginOut(**result.model_dump(), created=message.created)


def mfa_enrollment(message: auth_pb2.BeginMfaEnrollmentResponse) -> schemas.MfaEnrollmentOut:
    return schemas.MfaEnrollmentOut(
        secret=message.secret,
        otpauth_uri=message.otpauth_uri,
        qr_png_base64=base64.b64encode(message.qr_png).decode("ascii"),
    )
