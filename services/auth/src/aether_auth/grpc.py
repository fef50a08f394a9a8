"""The AuthService gRPC servicer: parse, open the transaction, call the service, answer.

Access rules follow auth.proto: "caller" RPCs need a verified access token (`require_caller`),
"admin" ones also `users:admin` (checked again by the service against the database).
"""

from __future__ import annotations

import json

import grpc

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether_auth import schemas
from aether_auth.callers import require_account_holder, require_caller
from aether_auth.keys import KeyRing
from aether_auth.rbac import plan_from_pb, role_from_pb
from aether_auth.service import AuthService, SecondFactor
from aether_auth.service_clients import ServiceClients
from aether_auth.validation import user_id as parse_user_id
from aether_common.errors import ValidationFailed
from aether_common.grpc.interceptors import Context
from aether_common.postgres import PostgresDatabase

SERVICE_NAME = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        service: AuthService,
        database: PostgresDatabase,
        keys: KeyRing,
        service_clients: ServiceClients,
    ) -> None:
        self._service = service
        self._db = database
        self._keys = keys
        self._service_clients = service_clients

    # -- accounts ---------------------------------------------------------------------------
    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        view = await self._db.transaction(
            lambda uow: self._service.register(
                uow,
                email=request.email,
                password=request.password,
                name=request.display_name,
                client=schemas.client_info(request.client),
            )
        )
        return auth_pb2.RegisterResponse(user=schemas.user_pb(view))

    async def GetMe(
        self, request: auth_pb2.GetMeRequest, context: Context
    ) -> auth_pb2.GetMeResponse:
        caller = require_caller()
        view = await self._db.transaction(lambda uow: self._service.get_me(uow, caller))
        return auth_pb2.GetMeResponse(user=schemas.user_pb(view))

    async def UpdateProfile(
        self, request: auth_pb2.UpdateProfileRequest, context: Context
    ) -> auth_pb2.UpdateProfileResponse:
        caller = require_caller()
        name = request.display_name if request.HasField("display_name") else None
        view = await self._db.transaction(
            lambda uow: self._service.update_profile(uow, caller, name=name)
        )
        return auth_pb2.UpdateProfileResponse(user=schemas.user_pb(view))

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: Context
    ) -> auth_pb2.ChangePasswordResponse:
        caller = require_caller()
        tokens = await self._db.transaction(
            lambda uow: self._service.change_password(
                uow, caller, current=request.current_password, new=request.new_password
            )
        )
        return auth_pb2.ChangePasswordResponse(tokens=schemas.tokens_pb(tokens))

    # -- sign-in ----------------------------------------------------------------------------
    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        result = await self._db.transaction(
            lambda uow: self._service.login(
                uow,
                email=request.email,
                password=request.password,
                client=schemas.client_info(request.client),
            )
        )
        if result.tokens is not None:
            return auth_pb2.LoginResponse(tokens=schemas.tokens_pb(result.tokens))
        return auth_pb2.LoginResponse(mfa_required=schemas.challenge_pb(result))

    async def CompleteMfaLogin(
        self, request: auth_pb2.CompleteMfaLoginRequest, context: Context
    ) -> auth_pb2.CompleteMfaLoginResponse:
        factor = SecondFactor(totp_code=request.totp_code, recovery_code=request.recovery_code)
        tokens = await self._db.transaction(
            lambda uow: self._service.complete_mfa_login(
                uow,
                challenge_token=request.challenge_token,
                factor=factor,
                client=schemas.client_info(request.client),
            )
        )
        return auth_pb2.CompleteMfaLoginResponse(tokens=schemas.tokens_pb(tokens))

    async def Refresh(
        self, request: auth_pb2.RefreshRequest, context: Context
    ) -> auth_pb2.RefreshResponse:
        tokens = await self._db.transaction(
            lambda uow: self._service.refresh(
                uow, refresh_token=request.refresh_token, client=schemas.client_info(request.client)
            )
        )
        return auth_pb2.RefreshResponse(tokens=schemas.tokens_pb(tokens))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        caller = require_caller()
        await self._db.transaction(
            lambda uow: self._service.logout(uow, caller, refresh_token=request.refresh_token)
        )
        return auth_pb2.LogoutResponse()

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Context
    ) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps(self._keys.jwks()))

    async def IssueServiceToken(
        self, request: auth_pb2.IssueServiceTokenRequest, context: Context
    ) -> auth_pb2.IssueServiceTokenResponse:
        issued = await self._service_clients.issue(request.client_id, request.client_secret)
        response = auth_pb2.IssueServiceTokenResponse(access_token=issued.access_token)
        response.expires_time.FromDatetime(issued.expires_at)
        return response

    # -- MFA --------------------------------------------------------------------------------
    async def BeginMfaEnrollment(
        self, request: auth_pb2.BeginMfaEnrollmentRequest, context: Context
    ) -> auth_pb2.BeginMfaEnrollmentResponse:
        caller = require_caller()
        enrollment = await self._db.transaction(
            lambda uow: self._service.begin_mfa_enrollment(uow, caller)
        )
        return auth_pb2.BeginMfaEnrollmentResponse(
            secret=enrollment.secret,
            otpauth_uri=enrollment.otpauth_uri,
            qr_png=enrollment.qr_png,
        )

    async def ConfirmMfaEnrollment(
        self, request: auth_pb2.ConfirmMfaEnrollmentRequest, context: Context
    ) -> auth_pb2.ConfirmMfaEnrollmentResponse:
        caller = require_caller()
        codes = await self._db.transaction(
            lambda uow: self._service.confirm_mfa_enrollment(
                uow, caller, totp_code=request.totp_code
            )
        )
        return auth_pb2.ConfirmMfaEnrollmentResponse(recovery_codes=codes)

    async def DisableMfa(
        self, request: auth_pb2.DisableMfaRequest, context: Context
    ) -> auth_pb2.DisableMfaResponse:
        caller = require_caller()
        factor = SecondFactor(totp_code=request.totp_code, recovery_code=request.recovery_code)
        await self._db.transaction(
            lambda uow: self._service.disable_mfa(uow, caller, factor=factor)
        )
        return auth_pb2.DisableMfaResponse()

    # -- mailed links -----------------------------------------------------------------------
    async def SendEmailVerification(
        self, request: auth_pb2.SendEmailVerificationRequest, context: Context
    ) -> auth_pb2.SendEmailVerificationResponse:
        caller = require_caller()
        await self._db.transaction(lambda uow: self._service.send_email_verification(uow, caller))
        return auth_pb2.SendEmailVerificationResponse()

    async def VerifyEmail(
        self, request: auth_pb2.VerifyEmailRequest, context: Context
    ) -> auth_pb2.VerifyEmailResponse:
        view = await self._db.transaction(
            lambda uow: self._service.verify_email(uow, token=request.token)
        )
        return auth_pb2.VerifyEmailResponse(user=schemas.user_pb(view))

    async def RequestPasswordReset(
        self, request: auth_pb2.RequestPasswordResetRequest, context: Context
    ) -> auth_pb2.RequestPasswordResetResponse:
        await self._db.transaction(
            lambda uow: self._service.request_password_reset(uow, email=request.email)
        )
        return auth_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: auth_pb2.ResetPasswordRequest, context: Context
    ) -> auth_pb2.ResetPasswordResponse:
        await self._db.transaction(
            lambda uow: self._service.reset_password(
                uow, token=request.token, new_password=request.new_password
            )
        )
        return auth_pb2.ResetPasswordResponse()

    # -- OAuth ------------------------------------------------------------------------------
    async def ListOAuthProviders(
        self, request: auth_pb2.ListOAuthProvidersRequest, context: Context
    ) -> auth_pb2.ListOAuthProvidersResponse:
        return auth_pb2.ListOAuthProvidersResponse(
            providers=[
                auth_pb2.OAuthProvider(name=name, display_name=label)
                for name, label in self._service.oauth_providers()
            ]
        )

    async def StartOAuth(
        self, request: auth_pb2.StartOAuthRequest, context: Context
    ) -> auth_pb2.StartOAuthResponse:
        url, state = await self._service.start_oauth(
            provider=request.provider, redirect_uri=request.redirect_uri
        )
        return auth_pb2.StartOAuthResponse(authorization_url=url, state=state)

    async def FinishOAuth(
        self, request: auth_pb2.FinishOAuthRequest, context: Context
    ) -> auth_pb2.FinishOAuthResponse:
        result = await self._db.transaction(
            lambda uow: self._service.finish_oauth(
                uow,
                provider=request.provider,
                code=request.code,
                state=request.state,
                client=schemas.client_info(request.client),
            )
        )
        if result.tokens is not None:
            return auth_pb2.FinishOAuthResponse(
                tokens=schemas.tokens_pb(result.tokens), created=result.created
            )
        return auth_pb2.FinishOAuthResponse(
            mfa_required=schemas.challenge_pb(result), created=result.created
        )

    # -- administration and GDPR ------------------------------------------------------------
    async def SetUserAccess(
        self, request: auth_pb2.SetUserAccessRequest, context: Context
    ) -> auth_pb2.SetUserAccessResponse:
        caller = require_caller()
        target = parse_user_id(request.user_id)
        plan, role = plan_from_pb(request.plan), role_from_pb(request.role)
        if request.plan and plan is None:
            raise ValidationFailed("unknown plan", field_errors={"plan": "is not a known plan"})
        if request.role and role is None:
            raise ValidationFailed("unknown role", field_errors={"role": "is not a known role"})
        view = await self._db.transaction(
            lambda uow: self._service.set_user_access(
                uow, caller, user_id=target, plan=plan, role=role
            )
        )
        return auth_pb2.SetUserAccessResponse(user=schemas.user_pb(view))

    async def ExportMyData(
        self, request: auth_pb2.ExportMyDataRequest, context: Context
    ) -> auth_pb2.ExportMyDataResponse:
        # The user themselves, or the worker acting for them (a `gdpr.export` job).
        user_id = require_account_holder()
        document = await self._db.transaction(
            lambda uow: self._service.export_my_data(uow, user_id)
        )
        return auth_pb2.ExportMyDataResponse(json=document)

    async def DeleteMyAccount(
        self, request: auth_pb2.DeleteMyAccountRequest, context: Context
    ) -> auth_pb2.DeleteMyAccountResponse:
        caller = require_caller()
        await self._db.transaction(
            lambda uow: self._service.delete_my_account(uow, caller, password=request.password)
        )
        return auth_pb2.DeleteMyAccountResponse()


def register(servicer: AuthServicer, server: grpc.aio.Server) -> None:
    auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
