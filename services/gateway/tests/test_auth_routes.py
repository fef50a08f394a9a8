"""Each /api/auth and /api/admin route calls its AuthService RPC, forwards what auth needs,
shapes the answer, and maps auth's errors to the right HTTP status."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from aether.auth.v1 import auth_pb2
from aether_common import errors
from aether_gateway.auth.cache import SHAPE
from aether_gateway.errors import UpstreamNotImplemented

CLIENT_IP = "203.0.113.7"


def profile_key(redis_prefix: str, user_id: str) -> str:
    return f"{redis_prefix}gw:profile:{SHAPE}:{user_id}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- public routes ---------------------------------------------------------------------------------
async def test_register_passes_the_client_and_answers_the_user(
    gateway: Any, fake_auth: Any, make_user: Callable[..., Any]
) -> None:
    fake_auth.answers["Register"] = auth_pb2.RegisterResponse(
        user=make_user("u-1", email="ada@example.com")
    )

    response = await gateway.post(
        "/api/auth/register",
        json={"email": " ada@example.com ", "password": "correct horse", "display_name": "Ada"},
        headers={"User-Agent": "aether-web/1.0"},
    )

    assert response.status_code == 201, response.text
    assert response.json() == {
        "id": "u-1",
        "email": "ada@example.com",
        "email_verified": True,
        "display_name": "Ada",
        "plan": "free",
        "role": "user",
        "permissions": ["profile:read"],
        "mfa_enabled": False,
        "created_time": None,
        "oauth_providers": ["github"],
    }
    (call,) = fake_auth.calls_to("Register")
    assert call.request.email == "ada@example.com"
    assert call.request.password == "correct horse"
    assert call.request.display_name == "Ada"
    assert call.request.client.ip == CLIENT_IP
    assert call.request.client.user_agent == "aether-web/1.0"


async def test_login_answers_tokens(
    gateway: Any, fake_auth: Any, make_tokens: Callable[..., Any]
) -> None:
    fake_auth.answers["Login"] = auth_pb2.LoginResponse(tokens=make_tokens("at-1", "rt-1"))

    response = await gateway.post(
        "/api/auth/login", json={"email": "ada@example.com", "password": "pw"}
    )

    assert response.json() == {
        "mfa_required": False,
        "tokens": {
            "access_token": "at-1",
            "refresh_token": "rt-1",
            "token_type": "Bearer",
            "expires_in": 900,
            "refresh_expires_in": 2_592_000,
        },
        "challenge": None,
    }
    assert fake_auth.calls_to("Login")[0].request.client.ip == CLIENT_IP


async def test_login_with_mfa_answers_a_challenge_then_tokens(
    gateway: Any, fake_auth: Any, make_tokens: Callable[..., Any]
) -> None:
    fake_auth.answers["Login"] = auth_pb2.LoginResponse(
        mfa_required=auth_pb2.MfaChallenge(
            challenge_token="ch-1", methods=["totp", "recovery_code"], expires_in=300
        )
    )
    fake_auth.answers["CompleteMfaLogin"] = auth_pb2.CompleteMfaLoginResponse(tokens=make_tokens())

    first = await gateway.post("/api/auth/login", json={"email": "a@b.co", "password": "pw"})
    second = await gateway.post(
        "/api/auth/login/mfa", json={"challenge_token": "ch-1", "recovery_code": "abcd-efgh"}
    )

    assert first.json() == {
        "mfa_required": True,
        "tokens": None,
        "challenge": {
            "challenge_token": "ch-1",
            "methods": ["totp", "recovery_code"],
            "expires_in": 300,
        },
    }
    assert second.json()["access_token"] == "at"
    (call,) = fake_auth.calls_to("CompleteMfaLogin")
    assert call.request.WhichOneof("code") == "recovery_code"
    assert call.request.recovery_code == "abcd-efgh"
    assert call.request.client.ip == CLIENT_IP


async def test_refresh(gateway: Any, fake_auth: Any, make_tokens: Callable[..., Any]) -> None:
    fake_auth.answers["Refresh"] = auth_pb2.RefreshResponse(tokens=make_tokens("at-2", "rt-2"))

    response = await gateway.post("/api/auth/refresh", json={"refresh_token": "rt-1"})

    assert response.json()["refresh_token"] == "rt-2"
    assert fake_auth.calls_to("Refresh")[0].request.refresh_token == "rt-1"


async def test_email_verification_and_password_reset(
    gateway: Any, fake_auth: Any, token: Callable[..., str], make_user: Callable[..., Any]
) -> None:
    fake_auth.answers["VerifyEmail"] = auth_pb2.VerifyEmailResponse(user=make_user("u-5"))

    send = await gateway.post("/api/auth/email/verify/send", headers=auth(token()))
    verify = await gateway.post("/api/auth/email/verify", json={"token": "mail-token"})
    forgot = await gateway.post("/api/auth/password/forgot", json={"email": "a@b.co"})
    reset = await gateway.post(
        "/api/auth/password/reset", json={"token": "reset-token", "new_password": "n3w-passw0rd"}
    )

    assert (send.status_code, send.json()) == (202, {"status": "accepted"})
    assert verify.json()["id"] == "u-5"
    assert fake_auth.calls_to("VerifyEmail")[0].request.token == "mail-token"
    assert forgot.status_code == 202
    assert fake_auth.calls_to("RequestPasswordReset")[0].request.client.ip == CLIENT_IP
    assert reset.status_code == 204
    assert fake_auth.calls_to("ResetPassword")[0].request.new_password == "n3w-passw0rd"


# -- OAuth -----------------------------------------------------------------------------------------
async def test_oauth_providers_and_start(gateway: Any, fake_auth: Any) -> None:
    fake_auth.answers["ListOAuthProviders"] = auth_pb2.ListOAuthProvidersResponse(
        providers=[auth_pb2.OAuthProvider(name="github", display_name="GitHub")]
    )
    fake_auth.answers["StartOAuth"] = auth_pb2.StartOAuthResponse(
        authorization_url="https://github.test/authorize?state=s1", state="s1"
    )

    providers = await gateway.get("/api/auth/oauth/providers")
    as_json = await gateway.get(
        "/api/auth/oauth/github/start", params={"redirect_uri": "https://app.test/cb"}
    )
    as_redirect = await gateway.get("/api/auth/oauth/github/start", params={"redirect": "true"})

    assert providers.json() == {"providers": [{"name": "github", "display_name": "GitHub"}]}
    assert as_json.json() == {
        "authorization_url": "https://github.test/authorize?state=s1",
        "state": "s1",
    }
    assert as_redirect.status_code == 302
    assert as_redirect.headers["Location"] == "https://github.test/authorize?state=s1"
    first = fake_auth.calls_to("StartOAuth")[0].request
    assert (first.provider, first.redirect_uri) == ("github", "https://app.test/cb")


async def test_oauth_callback_get_and_post(
    gateway: Any, fake_auth: Any, make_tokens: Callable[..., Any]
) -> None:
    fake_auth.answers["FinishOAuth"] = auth_pb2.FinishOAuthResponse(
        tokens=make_tokens(), created=True
    )

    via_get = await gateway.get(
        "/api/auth/oauth/github/callback", params={"code": "c1", "state": "s1"}
    )
    via_post = await gateway.post(
        "/api/auth/oauth/github/callback", json={"code": "c2", "state": "s2"}
    )

    for response in (via_get, via_post):
        assert response.status_code == 200, response.text
        assert response.json()["created"] is True
        assert response.json()["tokens"]["access_token"] == "at"
    calls = [c.request for c in fake_auth.calls_to("FinishOAuth")]
    assert [(c.provider, c.code, c.state) for c in calls] == [
        ("github", "c1", "s1"),
        ("github", "c2", "s2"),
    ]
    assert {c.client.ip for c in calls} == {CLIENT_IP}


async def test_oauth_callback_errors(
    gateway: Any, fake_auth: Any, error_shape: Callable[..., str]
) -> None:
    denied = await gateway.get("/api/auth/oauth/github/callback", params={"error": "access_denied"})
    incomplete = await gateway.get("/api/auth/oauth/github/callback", params={"code": "c1"})

    assert "access_denied" in error_shape(denied, 400, "oauth_denied")
    assert "'state' are required" in error_shape(incomplete, 400, "validation")
    assert fake_auth.calls_to("FinishOAuth") == []


# -- the caller's account --------------------------------------------------------------------------
async def test_me_is_cached_and_invalidated_by_an_update(
    gateway: Any,
    fake_auth: Any,
    redis: Redis,
    redis_prefix: str,
    token: Callable[..., str],
    make_user: Callable[..., Any],
) -> None:
    access = token(sub="u-7")
    fake_auth.answers["GetMe"] = auth_pb2.GetMeResponse(user=make_user("u-7"))
    fake_auth.answers["UpdateProfile"] = auth_pb2.UpdateProfileResponse(
        user=make_user("u-7", display_name="Ada L.")
    )

    first = await gateway.get("/api/auth/me", headers=auth(access))
    second = await gateway.get("/api/auth/me", headers=auth(access))
    ttl = await redis.ttl(profile_key(redis_prefix, "u-7"))
    patched = await gateway.patch(
        "/api/auth/me", json={"display_name": "Ada L."}, headers=auth(access)
    )
    cached_after_patch = await redis.exists(profile_key(redis_prefix, "u-7"))
    fake_auth.answers["GetMe"] = auth_pb2.GetMeResponse(
        user=make_user("u-7", display_name="Ada L.")
    )
    third = await gateway.get("/api/auth/me", headers=auth(access))

    assert first.json() == second.json()
    assert len(fake_auth.calls_to("GetMe")) == 2  # first and third: the second was cached
    assert 590 < ttl <= 600
    assert patched.json()["display_name"] == "Ada L."
    assert fake_auth.calls_to("UpdateProfile")[0].request.display_name == "Ada L."
    assert fake_auth.calls_to("UpdateProfile")[0].metadata["authorization"] == f"Bearer {access}"
    assert cached_after_patch == 0
    assert third.json()["display_name"] == "Ada L."


async def test_cached_profiles_are_per_user(
    gateway: Any, fake_auth: Any, token: Callable[..., str], make_user: Callable[..., Any]
) -> None:
    fake_auth.answers["GetMe"] = lambda request: auth_pb2.GetMeResponse(user=make_user("u-a"))
    await gateway.get("/api/auth/me", headers=auth(token(sub="u-a")))
    fake_auth.answers["GetMe"] = lambda request: auth_pb2.GetMeResponse(user=make_user("u-b"))

    other = await gateway.get("/api/auth/me", headers=auth(token(sub="u-b")))

    assert other.json()["id"] == "u-b"


@pytest.mark.parametrize(
    ("method", "path", "body", "rpc", "status"),
    [
        (
            "POST",
            "/api/auth/password",
            {"current_password": "old", "new_password": "n3w-passw0rd"},
            "ChangePassword",
            200,
        ),
        ("POST", "/api/auth/mfa/confirm", {"totp_code": "123456"}, "ConfirmMfaEnrollment", 200),
        ("POST", "/api/auth/mfa/disable", {"totp_code": "123456"}, "DisableMfa", 204),
        ("DELETE", "/api/auth/me", {"password": "pw"}, "DeleteMyAccount", 204),
    ],
)
async def test_profile_changes_drop_the_cached_profile(
    gateway: Any,
    fake_auth: Any,
    redis: Redis,
    redis_prefix: str,
    token: Callable[..., str],
    method: str,
    path: str,
    body: dict[str, str],
    rpc: str,
    status: int,
) -> None:
    access = token(sub="u-9")
    await gateway.get("/api/auth/me", headers=auth(access))
    assert await redis.exists(profile_key(redis_prefix, "u-9")) == 1

    response = await gateway.request(method, path, json=body, headers=auth(access))

    assert response.status_code == status, response.text
    assert await redis.exists(profile_key(redis_prefix, "u-9")) == 0
    (call,) = fake_auth.calls_to(rpc)
    assert call.metadata["authorization"] == f"Bearer {access}"


async def test_mfa_enrolment(gateway: Any, fake_auth: Any, token: Callable[..., str]) -> None:
    fake_auth.answers["BeginMfaEnrollment"] = auth_pb2.BeginMfaEnrollmentResponse(
        secret="JBSWY3DPEHPK3PXP", otpauth_uri="otpauth://totp/Aether:ada", qr_png=b"\x89PNG"
    )
    fake_auth.answers["ConfirmMfaEnrollment"] = auth_pb2.ConfirmMfaEnrollmentResponse(
        recovery_codes=["aaaa-bbbb", "cccc-dddd"]
    )

    begun = await gateway.post("/api/auth/mfa/enroll", headers=auth(token()))
    confirmed = await gateway.post(
        "/api/auth/mfa/confirm", json={"totp_code": "123456"}, headers=auth(token())
    )

    assert begun.json() == {
        "secret": "JBSWY3DPEHPK3PXP",
        "otpauth_uri": "otpauth://totp/Aether:ada",
        "qr_png_base64": base64.b64encode(b"\x89PNG").decode(),
    }
    assert confirmed.json() == {"recovery_codes": ["aaaa-bbbb", "cccc-dddd"]}


async def test_export_is_a_json_download(
    gateway: Any, fake_auth: Any, token: Callable[..., str]
) -> None:
    fake_auth.answers["ExportMyData"] = auth_pb2.ExportMyDataResponse(
        json='{"user": {"id": "u-1"}}'
    )

    response = await gateway.get("/api/auth/me/export", headers=auth(token()))

    assert response.json() == {"user": {"id": "u-1"}}
    assert response.headers["Content-Type"] == "application/json"
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.headers["Cache-Control"] == "no-store"


async def test_account_deletion_ends_the_token(
    gateway: Any, fake_auth: Any, token: Callable[..., str], error_shape: Callable[..., str]
) -> None:
    access = token()

    deleted = await gateway.request(
        "DELETE", "/api/auth/me", json={"password": "pw"}, headers=auth(access)
    )
    after = await gateway.get("/api/auth/me", headers=auth(access))

    assert deleted.status_code == 204
    assert fake_auth.calls_to("DeleteMyAccount")[0].request.password == "pw"
    assert "revoked" in error_shape(after, 401, "invalid_token")


async def test_caller_routes_refuse_anonymous_callers_before_calling_auth(
    gateway: Any, fake_auth: Any, error_shape: Callable[..., str]
) -> None:
    for method, path in [
        ("GET", "/api/auth/me"),
        ("PATCH", "/api/auth/me"),
        ("DELETE", "/api/auth/me"),
        ("GET", "/api/auth/me/export"),
        ("POST", "/api/auth/logout"),
        ("POST", "/api/auth/password"),
        ("POST", "/api/auth/mfa/enroll"),
        ("POST", "/api/auth/email/verify/send"),
    ]:
        error_shape(await gateway.request(method, path), 401, "unauthenticated")
    assert [c.method for c in fake_auth.calls if c.method != "GetJwks"] == []


# -- admin -----------------------------------------------------------------------------------------
async def test_set_user_access_needs_users_admin_at_the_gateway(
    gateway: Any, fake_auth: Any, token: Callable[..., str], error_shape: Callable[..., str]
) -> None:
    response = await gateway.put(
        "/api/admin/users/u-2/access", json={"plan": "premium"}, headers=auth(token(perms=[]))
    )

    assert "users:admin" in error_shape(response, 403, "forbidden")
    assert fake_auth.calls_to("SetUserAccess") == []


async def test_set_user_access(
    gateway: Any,
    fake_auth: Any,
    redis: Redis,
    redis_prefix: str,
    token: Callable[..., str],
    make_user: Callable[..., Any],
) -> None:
    await redis.set(profile_key(redis_prefix, "u-2"), "{}", ex=600)
    fake_auth.answers["SetUserAccess"] = auth_pb2.SetUserAccessResponse(
        user=make_user("u-2", plan=auth_pb2.PLAN_PREMIUM, role=auth_pb2.ROLE_MODERATOR)
    )
    admin = token(plan="admin", roles=["admin"], perms=["users:admin"])

    response = await gateway.put(
        "/api/admin/users/u-2/access",
        json={"plan": "premium", "role": "moderator"},
        headers=auth(admin),
    )

    assert response.status_code == 200, response.text
    assert (response.json()["plan"], response.json()["role"]) == ("premium", "moderator")
    (call,) = fake_auth.calls_to("SetUserAccess")
    assert call.request.user_id == "u-2"
    assert call.request.plan == auth_pb2.PLAN_PREMIUM
    assert call.request.role == auth_pb2.ROLE_MODERATOR
    assert call.metadata["authorization"] == f"Bearer {admin}"
    assert await redis.exists(profile_key(redis_prefix, "u-2")) == 0


async def test_set_user_access_leaves_what_is_not_sent(
    gateway: Any, fake_auth: Any, token: Callable[..., str], error_shape: Callable[..., str]
) -> None:
    admin = auth(token(perms=["users:admin"]))

    role_only = await gateway.put(
        "/api/admin/users/u-2/access", json={"role": "admin"}, headers=admin
    )
    nothing = await gateway.put("/api/admin/users/u-2/access", json={}, headers=admin)
    bad_plan = await gateway.put(
        "/api/admin/users/u-2/access", json={"plan": "gold"}, headers=admin
    )

    assert role_only.status_code == 200
    assert fake_auth.calls_to("SetUserAccess")[0].request.plan == auth_pb2.PLAN_UNSPECIFIED
    assert "plan, role or both" in error_shape(nothing, 400, "validation")
    assert "body.plan" in error_shape(bad_plan, 400, "validation")


# -- errors from auth ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (
            errors.ValidationFailed("password too short", field_errors={"password": "min 12"}),
            400,
            "validation",
        ),
        (errors.Unauthenticated("bad credentials", code="bad_credentials"), 401, "bad_credentials"),
        (errors.Forbidden("account locked", code="locked"), 403, "locked"),
        (errors.NotFound("no such user"), 404, "not_found"),
        (errors.Conflict("email already registered", code="email_taken"), 409, "email_taken"),
        (errors.PreconditionFailed("email not verified"), 422, "precondition_failed"),
        (errors.Unavailable("mail server down", code="mail_unavailable"), 503, "mail_unavailable"),
        (errors.Unavailable("mail server down"), 503, "unavailable"),
        (errors.Timeout("mail server slow"), 504, "timeout"),
        (UpstreamNotImplemented("not yet"), 501, "not_implemented"),
    ],
)
async def test_auth_errors_map_to_http(
    gateway: Any,
    fake_auth: Any,
    error_shape: Callable[..., str],
    error: errors.AetherError,
    status: int,
    code: str,
) -> None:
    fake_auth.answers["Register"] = error

    response = await gateway.post(
        "/api/auth/register", json={"email": "a@b.co", "password": "long enough"}
    )

    detail = error_shape(response, status, code)
    if status != 501:
        assert detail == error.detail  # auth's own words, not a transport message


async def test_a_throttled_login_says_when_to_retry(
    gateway: Any, fake_auth: Any, error_shape: Callable[..., str]
) -> None:
    fake_auth.answers["Login"] = errors.RateLimited("too many attempts", retry_after=2.5)

    response = await gateway.post("/api/auth/login", json={"email": "a@b.co", "password": "pw"})

    assert error_shape(response, 429, "rate_limited") == "too many attempts"
    assert response.headers["Retry-After"] == "3"


async def test_a_bug_in_auth_is_a_500_that_leaks_nothing(
    gateway: Any, fake_auth: Any, error_shape: Callable[..., str]
) -> None:
    def crash(request: Any) -> Any:
        raise RuntimeError("password=hunter2 at db01.internal")

    fake_auth.answers["Login"] = crash

    response = await gateway.post("/api/auth/login", json={"email": "a@b.co", "password": "pw"})

    assert error_shape(response, 500, "internal") == "internal error"


async def test_auth_unreachable_is_503_never_500(
    start_gateway: Any, error_shape: Callable[..., str]
) -> None:
    gateway = await start_gateway(auth_grpc_target="127.0.0.1:1")

    response = await gateway.post("/api/auth/login", json={"email": "a@b.co", "password": "pw"})

    assert "auth service is unavailable" in error_shape(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "1"


async def test_a_slow_auth_is_504(
    start_gateway: Any, fake_auth: Any, error_shape: Callable[..., str]
) -> None:
    async def slow(request: Any) -> Any:
        await asyncio.sleep(1.0)
        return auth_pb2.LoginResponse()

    fake_auth.answers["Login"] = slow
    gateway = await start_gateway(auth_timeout_s=0.2)

    response = await gateway.post("/api/auth/login", json={"email": "a@b.co", "password": "pw"})

    assert "did not answer in time" in error_shape(response, 504, "timeout")
