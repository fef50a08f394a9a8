"""Accounts and sessions through a real gRPC channel: register, verify by mail, login, refresh
with rotation and re-use detection, logout, profile, password change and reset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from aether.auth.v1 import auth_pb2, events_pb2
from aether_auth import events


async def test_register_verify_login_refresh_reuse_logout(
    auth: Any, kit: Any, maildir: Path
) -> None:
    email = kit.unique_email("Ada")
    user = await auth.register("  " + email.upper() + " ")
    # Normalised: trimmed and lower-cased; a fresh account is free, role user, unverified.
    assert user.email == email.lower()
    assert (user.plan, user.role, user.email_verified) == (
        auth_pb2.PLAN_FREE,
        auth_pb2.ROLE_USER,
        False,
    )
    assert "chat:write" in user.permissions
    assert "users:admin" not in user.permissions
    registered = await auth.events(events.REGISTERED, events_pb2.UserRegistered)
    assert [(e.subject, e.payload.method, e.payload.client.ip) for e in registered] == [
        (user.id, "password", "203.0.113.7")
    ]

    # The mailed link, built from the public base URL, verifies the address once.
    mail = auth.mail(user.email, "Verify your email address")
    assert "https://app.aether.test/verify-email?token=" in mail.get_payload()
    token = kit.link_token(mail)
    verified = await auth.stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token))
    assert verified.user.email_verified
    again = await kit.failure(auth.stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token)))
    assert again.http_status == 400
    assert "already used" in again.detail
    assert [
        e.payload.email
        for e in await auth.events(events.EMAIL_VERIFIED, events_pb2.UserEmailVerified)
    ] == [user.email]

    first = await auth.tokens(user.email)
    assert first.token_type == "Bearer"
    assert first.expires_in == 15 * 60
    assert first.refresh_expires_in == 30 * 24 * 3600
    me = await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(first.access_token))
    assert me.user.id == user.id
    assert me.user.email_verified
    logged_in = await auth.events(events.LOGGED_IN, events_pb2.UserLoggedIn)
    assert [e.payload.method for e in logged_in] == ["password"]

    # Rotation: the new pair works, the old refresh token is spent.
    second = (
        await auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    ).tokens
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(second.access_token))

    # Re-using the rotated token revokes the whole family: the newest tokens die too.
    reuse = await kit.failure(
        auth.stub.Refresh(
            auth_pb2.RefreshRequest(refresh_token=first.refresh_token, client=auth.CLIENT)
        )
    )
    assert reuse.http_status == 401
    assert reuse.error_code == "token_reused"
    family = await kit.failure(
        auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=second.refresh_token))
    )
    assert family.http_status == 401
    assert "signed out" in family.detail
    revoked = await kit.failure(
        auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(second.access_token))
    )
    assert revoked.detail == "access token has been revoked"
    reused = await auth.events(events.TOKEN_REUSE_DETECTED, events_pb2.UserTokenReuseDetected)
    assert len(reused) == 1
    assert reused[0].subject == user.id
    assert reused[0].payload.session_id == logged_in[0].payload.session_id

    # Logout: the access token is refused at once, and so is the session's refresh token.
    third = await auth.tokens(user.email)
    await auth.stub.Logout(auth_pb2.LogoutRequest(), metadata=kit.bearer(third.access_token))
    after = await kit.failure(
        auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(third.access_token))
    )
    assert after.http_status == 401
    assert "revoked" in after.detail
    spent = await kit.failure(
        auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=third.refresh_token))
    )
    assert spent.http_status == 401


async def test_logout_also_revokes_a_named_refresh_family_of_the_caller(
    auth: Any, kit: Any
) -> None:
    email = kit.unique_email()
    await auth.register(email)
    phone, laptop = await auth.tokens(email), await auth.tokens(email)
    await auth.stub.Logout(
        auth_pb2.LogoutRequest(refresh_token=laptop.refresh_token),
        metadata=kit.bearer(phone.access_token),
    )
    for pair in (phone, laptop):
        error = await kit.failure(
            auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=pair.refresh_token))
        )
        assert error.http_status == 401


async def test_unverified_account_signs_in_and_its_token_says_so(auth: Any, kit: Any) -> None:
    email = kit.unique_email()
    await auth.register(email)
    tokens = await auth.tokens(email)
    claims = await auth.app.tokens.verify(tokens.access_token)
    assert claims.email_verified is False
    assert claims.plan == "free"
    assert claims.roles == ("user",)


async def test_duplicate_email_is_a_conflict(auth: Any, kit: Any) -> None:
    email = kit.unique_email()
    await auth.register(email)
    error = await kit.failure(auth.register(email.upper()))
    assert error.http_status == 409
    assert error.error_code == "email_taken"


async def test_bad_input_is_a_clear_400_and_writes_nothing(auth: Any, kit: Any) -> None:
    cases = [
        ("not-an-email", "correct horse battery", "email"),
        ("", "correct horse battery", "email"),
        (kit.unique_email(), "short", "password"),
        (kit.unique_email(), "", "password"),
        (kit.unique_email(), "password123", "password"),  # too common
        (kit.unique_email(), "aaaaaaaaaaaa", "password"),  # too repetitive
    ]
    for email, password, field in cases:
        error = await kit.failure(
            auth.stub.Register(auth_pb2.RegisterRequest(email=email, password=password))
        )
        assert error.http_status == 400, (email, password)
        assert field in error.field_errors, error.field_errors
        assert field in error.detail
    both = await kit.failure(auth.stub.Register(auth_pb2.RegisterRequest(email="x@", password="1")))
    assert set(both.field_errors) == {"email", "password"}
    assert await auth.sql("SELECT id FROM users") == []
    assert await auth.sql("SELECT seq FROM event_outbox") == []

    empty = await kit.failure(auth.stub.Login(auth_pb2.LoginRequest()))
    assert empty.http_status == 400
    assert set(empty.field_errors) == {"email", "password"}
    anonymous = await kit.failure(auth.stub.GetMe(auth_pb2.GetMeRequest()))
    assert anonymous.http_status == 401
    garbage = await kit.failure(
        auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token="not-a-token"))
    )
    assert garbage.http_status == 401
    assert "invalid or expired" in garbage.detail


async def test_update_profile_changes_only_what_is_set(auth: Any, kit: Any) -> None:
    email = kit.unique_email()
    await auth.register(email)
    tokens = await auth.tokens(email)
    md = kit.bearer(tokens.access_token)
    same = await auth.stub.UpdateProfile(auth_pb2.UpdateProfileRequest(), metadata=md)
    assert same.user.display_name == "Ada"
    changed = await auth.stub.UpdateProfile(
        auth_pb2.UpdateProfileRequest(display_name="  Ada L.  "), metadata=md
    )
    assert changed.user.display_name == "Ada L."
    too_long = await kit.failure(
        auth.stub.UpdateProfile(auth_pb2.UpdateProfileRequest(display_name="x" * 65), metadata=md)
    )
    assert too_long.http_status == 400
    assert "display_name" in too_long.field_errors


async def test_change_password_revokes_other_sessions(auth: Any, kit: Any) -> None:
    email = kit.unique_email()
    await auth.register(email)
    here, elsewhere = await auth.tokens(email), await auth.tokens(email)
    new_password = "a brand new passphrase"

    wrong = await kit.failure(
        auth.stub.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password="nope", new_password=new_password),
            metadata=kit.bearer(here.access_token),
        )
    )
    assert wrong.http_status == 403
    assert "incorrect" in wrong.detail
    weak = await kit.failure(
        auth.stub.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password=auth.PASSWORD, new_password="x"),
            metadata=kit.bearer(here.access_token),
        )
    )
    assert weak.http_status == 400
    assert "new_password" in weak.field_errors

    fresh = (
        await auth.stub.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password=auth.PASSWORD, new_password=new_password
            ),
            metadata=kit.bearer(here.access_token),
        )
    ).tokens
    await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(fresh.access_token))
    for old in (here, elsewhere):
        code = await kit.failure(
            auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(old.access_token))
        )
        assert code.http_status == 401
        spent = await kit.failure(
            auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=old.refresh_token))
        )
        assert spent.http_status == 401
    await auth.tokens(email, new_password)
    changed = await auth.events(events.PASSWORD_CHANGED, events_pb2.UserPasswordChanged)
    assert [e.payload.method for e in changed] == ["change"]


async def test_password_reset_by_mail(auth: Any, kit: Any, maildir: Path) -> None:
    email = kit.unique_email()
    await auth.register(email)
    before = await auth.tokens(email)

    # Unknown addresses get the same empty answer and no mail.
    stranger = kit.unique_email("nobody")
    await auth.stub.RequestPasswordReset(auth_pb2.RequestPasswordResetRequest(email=stranger))
    await auth.stub.RequestPasswordReset(auth_pb2.RequestPasswordResetRequest(email=email))
    token = kit.link_token(auth.mail(email, "Reset your password"))
    assert auth.mails(stranger) == []

    weak = await kit.failure(
        auth.stub.ResetPassword(auth_pb2.ResetPasswordRequest(token=token, new_password="1"))
    )
    assert weak.http_status == 400
    assert "new_password" in weak.field_errors
    new_password = "reset to something long"
    await auth.stub.ResetPassword(
        auth_pb2.ResetPasswordRequest(token=token, new_password=new_password)
    )
    reused = await kit.failure(
        auth.stub.ResetPassword(
            auth_pb2.ResetPasswordRequest(token=token, new_password="another long secret")
        )
    )
    assert reused.http_status == 400
    assert "already used" in reused.detail
    bogus = await kit.failure(
        auth.stub.ResetPassword(
            auth_pb2.ResetPasswordRequest(token="forged", new_password="another long secret")
        )
    )
    assert bogus.http_status == 400

    old = await kit.failure(auth.login(email))
    assert old.detail == "invalid email or password"
    after = await auth.tokens(email, new_password)
    # Every earlier session ended; the mail also proved the address.
    gone = await kit.failure(
        auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(before.access_token))
    )
    assert gone.http_status == 401
    me = await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(after.access_token))
    assert me.user.email_verified
    methods = [
        e.payload.method
        for e in await auth.events(events.PASSWORD_CHANGED, events_pb2.UserPasswordChanged)
    ]
    assert methods == ["reset"]


async def test_send_email_verification_again(auth: Any, kit: Any, maildir: Path) -> None:
    email = kit.unique_email()
    await auth.register(email)
    tokens = await auth.tokens(email)
    md = kit.bearer(tokens.access_token)
    await auth.stub.SendEmailVerification(auth_pb2.SendEmailVerificationRequest(), metadata=md)
    assert len(auth.mails(email)) == 2
    # Either link works (the newest here); then the address is verified.
    token = kit.link_token(auth.mail(email, "Verify your email address"))
    await auth.stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token))
    done = await kit.failure(
        auth.stub.SendEmailVerification(auth_pb2.SendEmailVerificationRequest(), metadata=md)
    )
    assert done.http_status == 422
    assert "already verified" in done.detail


async def test_mail_cooldown(start_auth: Any, kit: Any, maildir: Path) -> None:
    auth = await start_auth(mail_cooldown_s=60)
    email = kit.unique_email()
    await auth.register(email)  # the registration mail starts the cool-down
    tokens = await auth.tokens(email)
    error = await kit.failure(
        auth.stub.SendEmailVerification(
            auth_pb2.SendEmailVerificationRequest(), metadata=kit.bearer(tokens.access_token)
        )
    )
    assert error.http_status == 429
    assert error.retry_after
    assert error.retry_after > 0


async def test_grpc_health_reports_serving(auth: Any) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(auth.app.grpc.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(
            health_pb2.HealthCheckRequest(service="aether.auth.v1.AuthService")
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
