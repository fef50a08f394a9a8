"""TOTP MFA: enrolment (URI + QR), login with a code or a one-time recovery code, disabling."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from aether.auth.v1 import auth_pb2, events_pb2
from aether_auth import events, mfa

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def next_code(secret: str) -> str:
    """The code of the next 30-second step: the current one was spent confirming enrolment,
    and a code is never accepted twice (still within the one-step drift window)."""
    return mfa.current_totp(secret, now=time.time() + 30)


async def enrol(auth: Any, kit: Any, access_token: str) -> tuple[str, list[str]]:
    md = kit.bearer(access_token)
    begun = await auth.stub.BeginMfaEnrollment(auth_pb2.BeginMfaEnrollmentRequest(), metadata=md)
    confirmed = await auth.stub.ConfirmMfaEnrollment(
        auth_pb2.ConfirmMfaEnrollmentRequest(totp_code=mfa.current_totp(begun.secret)),
        metadata=md,
    )
    return begun.secret, list(confirmed.recovery_codes)


async def test_enrolment_needs_a_verified_email(auth: Any, kit: Any) -> None:
    email = kit.unique_email()
    await auth.register(email)
    tokens = await auth.tokens(email)
    error = await kit.failure(
        auth.stub.BeginMfaEnrollment(
            auth_pb2.BeginMfaEnrollmentRequest(), metadata=kit.bearer(tokens.access_token)
        )
    )
    assert error.http_status == 422
    assert "verify your email first" in error.detail


async def test_enrol_login_with_totp_and_recovery_codes(auth: Any, kit: Any, maildir: Path) -> None:
    email, tokens = await auth.verified_user()
    md = kit.bearer(tokens.access_token)

    begun = await auth.stub.BeginMfaEnrollment(auth_pb2.BeginMfaEnrollmentRequest(), metadata=md)
    uri = urlparse(begun.otpauth_uri)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert email in unquote(uri.path)
    assert parse_qs(uri.query)["secret"] == [begun.secret]
    assert parse_qs(uri.query)["issuer"] == ["Aether"]
    assert begun.qr_png.startswith(PNG_SIGNATURE)
    # The secret is stored encrypted, never in clear.
    stored = await auth.sql("SELECT secret_enc FROM mfa_totp")
    assert begun.secret.encode() not in bytes(stored[0]["secret_enc"])

    wrong = await kit.failure(
        auth.stub.ConfirmMfaEnrollment(
            auth_pb2.ConfirmMfaEnrollmentRequest(totp_code="000000"), metadata=md
        )
    )
    assert wrong.http_status == 400
    assert "totp_code" in wrong.field_errors
    confirmed = await auth.stub.ConfirmMfaEnrollment(
        auth_pb2.ConfirmMfaEnrollmentRequest(totp_code=mfa.current_totp(begun.secret)),
        metadata=md,
    )
    codes = list(confirmed.recovery_codes)
    assert len(codes) == 10
    assert len(set(codes)) == 10
    hashes = await auth.sql("SELECT code_hash FROM recovery_codes")
    assert len(hashes) == 10
    assert all(code.encode() not in bytes(row["code_hash"]) for row in hashes for code in codes)
    me = await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=md)
    assert me.user.mfa_enabled

    # Password alone now gives a challenge, not tokens.
    first = await auth.login(email)
    assert first.WhichOneof("result") == "mfa_required"
    challenge = first.mfa_required
    assert set(challenge.methods) == {"totp", "recovery_code"}
    assert challenge.expires_in == 300
    bad = await kit.failure(
        auth.stub.CompleteMfaLogin(
            auth_pb2.CompleteMfaLoginRequest(
                challenge_token=challenge.challenge_token, totp_code="123456"
            )
        )
    )
    assert bad.http_status == 401
    assert bad.error_code == "invalid_mfa_code"
    done = await auth.stub.CompleteMfaLogin(
        auth_pb2.CompleteMfaLoginRequest(
            challenge_token=challenge.challenge_token,
            totp_code=next_code(begun.secret),
            client=auth.CLIENT,
        )
    )
    await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(done.tokens.access_token))
    # A challenge works once.
    used = await kit.failure(
        auth.stub.CompleteMfaLogin(
            auth_pb2.CompleteMfaLoginRequest(
                challenge_token=challenge.challenge_token, recovery_code=codes[0]
            )
        )
    )
    assert used.http_status == 401
    assert "sign in again" in used.detail

    # A recovery code (typed loosely) signs in once, and only once.
    for attempt in range(2):
        challenge = (await auth.login(email)).mfa_required
        call = auth.stub.CompleteMfaLogin(
            auth_pb2.CompleteMfaLoginRequest(
                challenge_token=challenge.challenge_token,
                recovery_code=" " + codes[0].upper() + " ",
                client=auth.CLIENT,
            )
        )
        if attempt == 0:
            assert (await call).tokens.access_token
        else:
            error = await kit.failure(call)
            assert error.http_status == 401
            assert error.error_code == "invalid_mfa_code"

    used_events = await auth.events(events.RECOVERY_CODE_USED, events_pb2.UserRecoveryCodeUsed)
    assert [e.payload.codes_left for e in used_events] == [9]
    logins = await auth.events(events.LOGGED_IN, events_pb2.UserLoggedIn)
    assert [e.payload.method for e in logins] == ["password", "mfa_totp", "mfa_recovery_code"]
    enabled = await auth.events(events.MFA_ENABLED, events_pb2.UserMfaChanged)
    assert [e.payload.enabled for e in enabled] == [True]
    failed = await auth.events(events.LOGIN_FAILED, events_pb2.UserLoginFailed)
    assert [e.payload.reason for e in failed] == ["bad_mfa_code", "bad_mfa_code"]


async def test_wrong_mfa_codes_count_toward_the_lockout(
    start_auth: Any, kit: Any, maildir: Path
) -> None:
    auth = await start_auth(lockout_threshold=3, mfa_challenge_attempts=10)
    email, tokens = await auth.verified_user()
    await enrol(auth, kit, tokens.access_token)
    challenge = (await auth.login(email)).mfa_required.challenge_token
    request = auth_pb2.CompleteMfaLoginRequest(challenge_token=challenge, totp_code="000000")
    for _ in range(2):
        assert (await kit.failure(auth.stub.CompleteMfaLogin(request))).http_status == 401
    locked = await kit.failure(auth.stub.CompleteMfaLogin(request))
    assert locked.http_status == 429
    assert len(await auth.events(events.LOCKED_OUT, events_pb2.UserLockedOut)) == 1


async def test_a_challenge_dies_after_too_many_wrong_codes(
    start_auth: Any, kit: Any, maildir: Path
) -> None:
    auth = await start_auth(mfa_challenge_attempts=2)
    email, tokens = await auth.verified_user()
    secret, _ = await enrol(auth, kit, tokens.access_token)
    challenge = (await auth.login(email)).mfa_required.challenge_token
    for _ in range(2):
        await kit.failure(
            auth.stub.CompleteMfaLogin(
                auth_pb2.CompleteMfaLoginRequest(challenge_token=challenge, totp_code="000000")
            )
        )
    gone = await kit.failure(
        auth.stub.CompleteMfaLogin(
            auth_pb2.CompleteMfaLoginRequest(challenge_token=challenge, totp_code=next_code(secret))
        )
    )
    assert gone.http_status == 401
    assert gone.error_code == "invalid_challenge"


async def test_disable_needs_a_code(auth: Any, kit: Any, maildir: Path) -> None:
    email, tokens = await auth.verified_user()
    md = kit.bearer(tokens.access_token)
    _, codes = await enrol(auth, kit, tokens.access_token)
    again = await kit.failure(
        auth.stub.BeginMfaEnrollment(auth_pb2.BeginMfaEnrollmentRequest(), metadata=md)
    )
    assert again.http_status == 422
    assert "already enabled" in again.detail
    missing = await kit.failure(auth.stub.DisableMfa(auth_pb2.DisableMfaRequest(), metadata=md))
    assert missing.http_status == 400
    wrong = await kit.failure(
        auth.stub.DisableMfa(auth_pb2.DisableMfaRequest(totp_code="000000"), metadata=md)
    )
    assert wrong.http_status == 403
    await auth.stub.DisableMfa(auth_pb2.DisableMfaRequest(recovery_code=codes[3]), metadata=md)
    assert (await auth.login(email)).WhichOneof("result") == "tokens"
    assert await auth.sql("SELECT * FROM recovery_codes") == []
    disabled = await auth.events(events.MFA_DISABLED, events_pb2.UserMfaChanged)
    assert [e.payload.enabled for e in disabled] == [False]
    off = await kit.failure(
        auth.stub.DisableMfa(auth_pb2.DisableMfaRequest(totp_code="000000"), metadata=md)
    )
    assert off.http_status == 422
