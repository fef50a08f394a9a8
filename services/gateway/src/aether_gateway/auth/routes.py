"""`/api/auth/*`: each route parses, calls one AuthService RPC and shapes the answer.

Public routes pass the client's IP and user agent (ClientInfo) for auth's throttling and security
events; "caller" routes forward the caller's token as `authorization: Bearer ...` (auth verifies
it again). Changes to a profile drop its cached copy (cache.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response
from fastapi.responses import JSONResponse, RedirectResponse

from aether.auth.v1 import auth_pb2
from aether_common.errors import ValidationFailed
from aether_gateway.auth import convert
from aether_gateway.auth.schemas import (
    AcceptedOut,
    ChangePasswordIn,
    DeleteAccountIn,
    ForgotPasswordIn,
    LoginIn,
    LoginOut,
    LogoutIn,
    MfaConfirmIn,
    MfaDisableIn,
    MfaEnrollmentOut,
    MfaLoginIn,
    OAuthCallbackIn,
    OAuthLoginOut,
    OAuthProviderOut,
    OAuthProvidersOut,
    OAuthStartOut,
    RecoveryCodesOut,
    RefreshIn,
    RegisterIn,
    ResetPasswordIn,
    TokensOut,
    UpdateProfileIn,
    UserOut,
    VerifyEmailIn,
)
from aether_gateway.deps import Auth, Caller, Client, Jwks, Profiles, Resources, RevocationList

router = APIRouter(prefix="/api/auth", tags=["auth"])
# The same key set at the conventional OIDC-style address, for tools that look there.
well_known_router = APIRouter(tags=["auth"])

ProviderName = Annotated[
    str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="e.g. google, github")
]
JWKS_CACHE_CONTROL = "public, max-age=300"


def _one_code(body: MfaLoginIn | MfaDisableIn) -> dict[str, str]:
    if body.totp_code is not None:
        return {"totp_code": body.totp_code}
    assert body.recovery_code is not None  # the model requires exactly one
    return {"recovery_code": body.recovery_code}


# -- accounts and sessions -----------------------------------------------------------------------
@router.post("/register", status_code=201, summary="Create an account (Register)")
async def register(body: RegisterIn, auth: Auth, client: Client) -> UserOut:
    request = auth_pb2.RegisterRequest(
        email=body.email,
        password=body.password,
        display_name=body.display_name or "",
        client=client,
    )
    response = await auth.call(auth.stub.Register, request)
    return convert.user(response.user)


@router.post("/login", summary="Password login: tokens or an MFA challenge (Login)")
async def login(body: LoginIn, auth: Auth, client: Client) -> LoginOut:
    request = auth_pb2.LoginRequest(email=body.email, password=body.password, client=client)
    response = await auth.call(auth.stub.Login, request)
    return convert.login(response)


@router.post("/login/mfa", summary="Answer an MFA challenge (CompleteMfaLogin)")
async def login_mfa(body: MfaLoginIn, auth: Auth, client: Client) -> TokensOut:
    request = auth_pb2.CompleteMfaLoginRequest(
        challenge_token=body.challenge_token, client=client, **_one_code(body)
    )
    response = await auth.call(auth.stub.CompleteMfaLogin, request)
    return convert.tokens(response.tokens)


@router.post("/refresh", summary="Rotate a refresh token (Refresh)")
async def refresh(body: RefreshIn, auth: Auth, client: Client) -> TokensOut:
    request = auth_pb2.RefreshRequest(refresh_token=body.refresh_token, client=client)
    response = await auth.call(auth.stub.Refresh, request)
    return convert.tokens(response.tokens)


@router.post(
    "/logout", status_code=204, response_class=Response, summary="End the session (Logout)"
)
async def logout(
    caller: Caller,
    auth: Auth,
    revocations: RevocationList,
    body: Annotated[LogoutIn | None, Body()] = None,
) -> Response:
    request = auth_pb2.LogoutRequest(refresh_token=(body.refresh_token or "") if body else "")
    await auth.call(auth.stub.Logout, request, token=caller.raw)
    # Auth denies the token too; ours makes it stop at every gateway at once whatever auth does.
    await revocations.revoke_own(caller.jti, caller.expires_at)
    return Response(status_code=204)


# -- the caller's profile ------------------------------------------------------------------------
@router.get(
    "/me", response_model=UserOut, summary="The caller's profile (GetMe, cached 10 minutes)"
)
async def get_me(caller: Caller, gateway: Resources) -> UserOut | Response:
    # One dependency for both the cache and auth: FastAPI solves each one on every request.
    cached = await gateway.profiles.get(caller.subject)
    if cached is not None:  # the answer as it was sent before (cache.py)
        return Response(cached, media_type="application/json")
    auth = gateway.auth
    response = await auth.call(auth.stub.GetMe, auth_pb2.GetMeRequest(), token=caller.raw)
    user = convert.user(response.user)
    await gateway.profiles.put(caller.subject, user)
    return user


@router.patch("/me", summary="Change the caller's profile (UpdateProfile)")
async def update_me(
    body: UpdateProfileIn, caller: Caller, auth: Auth, profiles: Profiles
) -> UserOut:
    request = auth_pb2.UpdateProfileRequest(display_name=body.display_name)
    response = await auth.call(auth.stub.UpdateProfile, request, token=caller.raw)
    await profiles.invalidate(caller.subject)
    return convert.user(response.user)


@router.delete(
    "/me",
    status_code=204,
    response_class=Response,
    summary="Delete the caller's account (DeleteMyAccount)",
)
async def delete_me(
    caller: Caller,
    auth: Auth,
    profiles: Profiles,
    revocations: RevocationList,
    body: Annotated[DeleteAccountIn | None, Body()] = None,
) -> Response:
    request = auth_pb2.DeleteMyAccountRequest(password=body.password if body else "")
    await auth.call(auth.stub.DeleteMyAccount, request, token=caller.raw)
    await profiles.invalidate(caller.subject)
    await revocations.revoke_own(caller.jti, caller.expires_at)
    return Response(status_code=204)


@router.get(
    "/me/export",
    summary="Everything auth holds about the caller, as JSON (ExportMyData)",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
async def export_me(caller: Caller, auth: Auth) -> Response:
    response = await auth.call(
        auth.stub.ExportMyData, auth_pb2.ExportMyDataRequest(), token=caller.raw
    )
    return Response(
        response.json,
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="aether-export.json"'},
    )


@router.post("/password", summary="Change the password; other sessions end (ChangePassword)")
async def change_password(
    body: ChangePasswordIn, caller: Caller, auth: Auth, profiles: Profiles
) -> TokensOut:
    request = auth_pb2.ChangePasswordRequest(
        current_password=body.current_password, new_password=body.new_password
    )
    response = await auth.call(auth.stub.ChangePassword, request, token=caller.raw)
    await profiles.invalidate(caller.subject)
    return convert.tokens(response.tokens)


# -- keys ----------------------------------------------------------------------------------------
async def _jwks_response(jwks: Jwks) -> JSONResponse:
    return JSONResponse(await jwks.document(), headers={"Cache-Control": JWKS_CACHE_CONTROL})


@router.get(
    "/jwks",
    summary="Public keys that verify access tokens (GetJwks, cached)",
    response_model=dict[str, Any],
)
async def jwks(jwks: Jwks) -> JSONResponse:
    return await _jwks_response(jwks)


@well_known_router.get("/.well-known/jwks.json", include_in_schema=False)
async def well_known_jwks(jwks: Jwks) -> JSONResponse:
    return await _jwks_response(jwks)


# -- MFA -----------------------------------------------------------------------------------------
@router.post("/mfa/enroll", summary="Start TOTP enrolment (BeginMfaEnrollment)")
async def mfa_enroll(caller: Caller, auth: Auth) -> MfaEnrollmentOut:
    response = await auth.call(
        auth.stub.BeginMfaEnrollment, auth_pb2.BeginMfaEnrollmentRequest(), token=caller.raw
    )
    return convert.mfa_enrollment(response)


@router.post("/mfa/confirm", summary="Confirm enrolment; recovery codes (ConfirmMfaEnrollment)")
async def mfa_confirm(
    body: MfaConfirmIn, caller: Caller, auth: Auth, profiles: Profiles
) -> RecoveryCodesOut:
    request = auth_pb2.ConfirmMfaEnrollmentRequest(totp_code=body.totp_code)
    response = await auth.call(auth.stub.ConfirmMfaEnrollment, request, token=caller.raw)
    await profiles.invalidate(caller.subject)
    return RecoveryCodesOut(recovery_codes=list(response.recovery_codes))


@router.post(
    "/mfa/disable", status_code=204, response_class=Response, summary="Turn MFA off (DisableMfa)"
)
async def mfa_disable(
    body: MfaDisableIn, caller: Caller, auth: Auth, profiles: Profiles
) -> Response:
    request = auth_pb2.DisableMfaRequest(**_one_code(body))
    await auth.call(auth.stub.DisableMfa, request, token=caller.raw)
    await profiles.invalidate(caller.subject)
    return Response(status_code=204)


# -- email verification and password reset -------------------------------------------------------
@router.post(
    "/email/verify/send", status_code=202, summary="Mail a new link (SendEmailVerification)"
)
async def send_email_verification(caller: Caller, auth: Auth) -> AcceptedOut:
    await auth.call(
        auth.stub.SendEmailVerification,
        auth_pb2.SendEmailVerificationRequest(),
        token=caller.raw,
    )
    return AcceptedOut()


@router.post("/email/verify", summary="Consume the link's token (VerifyEmail)")
async def verify_email(body: VerifyEmailIn, auth: Auth, profiles: Profiles) -> UserOut:
    response = await auth.call(auth.stub.VerifyEmail, auth_pb2.VerifyEmailRequest(token=body.token))
    await profiles.invalidate(response.user.id)
    return convert.user(response.user)


@router.post(
    "/password/forgot",
    status_code=202,
    summary="Mail a reset link if the account exists; always 202 (RequestPasswordReset)",
)
async def forgot_password(body: ForgotPasswordIn, auth: Auth, client: Client) -> AcceptedOut:
    request = auth_pb2.RequestPasswordResetRequest(email=body.email, client=client)
    await auth.call(auth.stub.RequestPasswordReset, request)
    return AcceptedOut()


@router.post(
    "/password/reset",
    status_code=204,
    response_class=Response,
    summary="Set a new password (ResetPassword)",
)
async def reset_password(body: ResetPasswordIn, auth: Auth) -> Response:
    request = auth_pb2.ResetPasswordRequest(token=body.token, new_password=body.new_password)
    await auth.call(auth.stub.ResetPassword, request)
    return Response(status_code=204)


# -- OAuth / OIDC --------------------------------------------------------------------------------
@router.get("/oauth/providers", summary="Configured providers (ListOAuthProviders)")
async def oauth_providers(auth: Auth) -> OAuthProvidersOut:
    response = await auth.call(auth.stub.ListOAuthProviders, auth_pb2.ListOAuthProvidersRequest())
    return OAuthProvidersOut(
        providers=[
            OAuthProviderOut(name=p.name, display_name=p.display_name) for p in response.providers
        ]
    )


@router.get(
    "/oauth/{provider}/start",
    summary="Authorization URL; 302 to it with ?redirect=true (StartOAuth)",
    response_model=OAuthStartOut,
    responses={302: {"description": "redirect=true: Location is the authorization URL"}},
)
async def oauth_start(
    provider: ProviderName,
    auth: Auth,
    redirect_uri: Annotated[str, Query(max_length=2048)] = "",
    redirect: bool = False,
) -> OAuthStartOut | RedirectResponse:
    request = auth_pb2.StartOAuthRequest(provider=provider, redirect_uri=redirect_uri)
    response = await auth.call(auth.stub.StartOAuth, request)
    if redirect:
        return RedirectResponse(response.authorization_url, status_code=302)
    return OAuthStartOut(authorization_url=response.authorization_url, state=response.state)


async def _finish_oauth(
    provider: str, code: str, state: str, auth: Auth, client: Client
) -> OAuthLoginOut:
    request = auth_pb2.FinishOAuthRequest(provider=provider, code=code, state=state, client=client)
    response = await auth.call(auth.stub.FinishOAuth, request)
    return convert.oauth_login(response)


@router.get("/oauth/{provider}/callback", summary="Finish the provider's redirect (FinishOAuth)")
async def oauth_callback(
    provider: ProviderName,
    auth: Auth,
    client: Client,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=4096)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> OAuthLoginOut:
    if error is not None:  # the user refused, or the provider failed
        raise ValidationFailed(
            f"{provider} sign-in was not completed: {error}", code="oauth_denied"
        )
    if not code or not state:
        raise ValidationFailed(
            "query parameters 'code' and 'state' are required",
            field_errors={"code": "required", "state": "required"},
        )
    return await _finish_oauth(provider, code, state, auth, client)


@router.post("/oauth/{provider}/callback", summary="Finish OAuth with a JSON body (FinishOAuth)")
async def oauth_callback_post(
    provider: ProviderName, body: OAuthCallbackIn, auth: Auth, client: Client
) -> OAuthLoginOut:
    return await _finish_oauth(provider, body.code, body.state, auth, client)
