"""`/api/auth/*` and `/api/admin/*` wire models (pydantic): what clients send and get back.

Limits here are the gateway's sanity bounds (no megabyte passwords, no 10,000-character names);
the business rules (password policy, email syntax in full) are auth's and come back as 400s.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from aether_gateway.schemas import Request, Response

Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$"
    ),
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=256)]
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=256)]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
TotpCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{6,8}$")]
RecoveryCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=4, max_length=64)]
PlanName = Literal["free", "premium", "admin"]
RoleName = Literal["user", "moderator", "admin"]


# -- requests ------------------------------------------------------------------------------------
class RegisterIn(Request):
    email: Email
    password: NewPassword
    display_name: DisplayName | None = None


class LoginIn(Request):
    email: Email
    password: Password


class _OneCode(Request):
    totp_code: TotpCode | None = None
    recovery_code: RecoveryCode | None = None

    @model_validator(mode="after")
    def _exactly_one_code(self) -> Self:
        if (self.totp_code is None) == (self.recovery_code is None):
            raise ValueError("send exactly one of totp_code or recovery_code")
        return self


class MfaLoginIn(_OneCode):
    challenge_token: Token


class MfaDisableIn(_OneCode):
    pass


class MfaConfirmIn(Request):
    totp_code: TotpCode


class RefreshIn(Request):
    refresh_token: Token


class LogoutIn(Request):
    refresh_token: Token | None = None


class UpdateProfileIn(Request):
    display_name: DisplayName | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("send at least one field to change (display_name)")
        if self.display_name is None:
            raise ValueError("display_name cannot be null")
        return self


class ChangePasswordIn(Request):
    current_password: Password
    new_password: NewPassword


class VerifyEmailIn(Request):
    token: Token


class ForgotPasswordIn(Request):
    email: Email


class ResetPasswordIn(Request):
    token: Token
    new_password: NewPassword


class OAuthCallbackIn(Request):
    code: Token
    state: Token


class DeleteAccountIn(Request):
    password: Annotated[str, StringConstraints(max_length=256)] = ""


class SetAccessIn(Request):
    plan: PlanName | None = None
    role: RoleName | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> Self:
        if self.plan is None and self.role is None:
            raise ValueError("send plan, role or both")
        return self


# -- responses -----------------------------------------------------------------------------------
class UserOut(Response):
    id: str
    email: str
    email_verified: bool
    display_name: str
    plan: str
    role: str
    permissions: list[str]
    mfa_enabled: bool
    created_time: str | None = Field(description="RFC 3339, UTC")
    oauth_providers: list[str]


class TokensOut(Response):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int = Field(description="access token lifetime, seconds")
    refresh_expires_in: int


class MfaChallengeOut(Response):
    challenge_token: str
    methods: list[str]
    expires_in: int


class LoginOut(Response):
    """Tokens, or (mfa_required) a challenge to answer at POST /api/auth/login/mfa."""

    mfa_required: bool
    tokens: TokensOut | None = None
    challenge: MfaChallengeOut | None = None


class OAuthLoginOut(LoginOut):
    created: bool = Field(description="a new account was made for this identity")


class MfaEnrollmentOut(Response):
    secret: str
    otpauth_uri: str
    qr_png_base64: str


class RecoveryCodesOut(Response):
    recovery_codes: list[str]


class OAuthProviderOut(Response):
    name: str
    display_name: str


class OAuthProvidersOut(Response):
    providers: list[OAuthProviderOut]


class OAuthStartOut(Response):
    authorization_url: str
    state: str


class AcceptedOut(Response):
    status: Literal["accepted"] = "accepted"
