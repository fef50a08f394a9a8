"""Auth end to end through the gateway: only HTTP to the gateway's public routes.

Accounts and sessions (mail verification, refresh rotation and re-use detection, logout), TOTP
MFA with recovery codes, OAuth login against the local OIDC provider, RBAC with the operator CLI,
per-plan rate limits, and bad input (every refusal a 4xx in the one error shape, never a 500).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import httpx
import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PASSWORD = "correct horse battery staple"
ERROR_KEYS = {"error", "detail", "status_code"}
FREE_LIMIT = 60  # the gateway's default for the free plan, per minute


# -- helpers -------------------------------------------------------------------------------------
def unique_email(prefix: str = "e2e") -> str:
    return f"{prefix}.{secrets.token_hex(5)}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (the gateway verified it; the test only reads it)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def header_of(token: str) -> dict[str, Any]:
    return jwt.get_unverified_header(token)


def error_of(response: httpx.Response, status: int, detail: str | None = None) -> dict[str, Any]:
    """Checks the one error shape, the status, and (a regex) the message; returns the body."""
    assert response.status_code == status, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["status_code"] == status, body
    assert isinstance(body["error"], str), body
    assert body["error"], body
    assert isinstance(body["detail"], str), body
    assert body["detail"], body
    if detail is not None:
        assert re.search(detail, body["detail"], re.IGNORECASE), body
    return body


async def register(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await api.post(
        "/api/auth/register", json={"email": email, "password": password, "display_name": "Ada"}
    )
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    assert user["email"] == email
    return user


async def login(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await api.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def tokens(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    body = await login(api, email, password)
    assert body["mfa_required"] is False, body
    result: dict[str, Any] = body["tokens"]
    return result


async def new_user(api: httpx.AsyncClient, prefix: str = "e2e") -> tuple[str, dict[str, Any]]:
    email = unique_email(prefix)
    await register(api, email)
    return email, await tokens(api, email)


async def verified_user(
    api: httpx.AsyncClient, server_side: Any, prefix: str = "e2e"
) -> tuple[str, dict[str, Any]]:
    """A registered user who followed the mailed link, and fresh tokens."""
    email = unique_email(prefix)
    await register(api, email)
    token = link_token(await server_side.mail(email, "Verify your email address"))
    verified = await api.post("/api/auth/email/verify", json={"token": token})
    assert verified.status_code == 200, verified.text
    return email, await tokens(api, email)


async def me(api: httpx.AsyncClient, access_token: str) -> httpx.Response:
    return await api.get("/api/auth/me", headers=bearer(access_token))


def link_token(message: Any) -> str:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    match = re.search(r"\?token=([A-Za-z0-9_\-]+)", body.decode())
    assert match, body
    return match.group(1)


# -- accounts and sessions ---------------------------------------------------------------------
async def test_register_verify_login_refresh_reuse_and_logout(
    api: httpx.AsyncClient, server_side: Any
) -> None:
    email = unique_email("flow")
    user = await register(api, email)
    assert user["email_verified"] is False
    assert user["plan"] == "free"
    assert user["role"] == "user"

    token = link_token(await server_side.mail(email, "Verify your email address"))
    verified = await api.post("/api/auth/email/verify", json={"token": token})
    assert verified.status_code == 200, verified.text
    assert verified.json()["email_verified"] is True
    again = await api.post("/api/auth/email/verify", json={"token": token})
    error_of(again, 400)  # single use: the link's token is spent

    first = await tokens(api, email)
    assert first["token_type"] == "Bearer"
    assert first["expires_in"] > 0
    assert first["refresh_expires_in"] > first["expires_in"]
    profile = await me(api, first["access_token"])
    assert profile.status_code == 200, profile.text
    assert profile.json()["email"] == email
    assert profile.json()["email_verified"] is True
    assert profile.json()["id"] == user["id"]
    assert claims(first["access_token"])["email_verified"] is True

    refreshed = await api.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert claims(second["access_token"])["sid"] == claims(first["access_token"])["sid"]
    assert (await me(api, second["access_token"])).status_code == 200

    # Re-use of the spent refresh token: refused, and the whole family (session) is revoked.
    reused = await api.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    error_of(reused, 401)
    after = await api.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    error_of(after, 401)
    error_of(await me(api, second["access_token"]), 401)

    # A new session; logout ends it: its access token is refused at once, its refresh too.
    third = await tokens(api, email)
    out = await api.post(
        "/api/auth/logout",
        json={"refresh_token": third["refresh_token"]},
        headers=bearer(third["access_token"]),
    )
    assert out.status_code == 204, out.text
    error_of(await me(api, third["access_token"]), 401)
    gone = await api.post("/api/auth/refresh", json={"refresh_token": third["refresh_token"]})
    error_of(gone, 401)


async def test_wrong_password_is_refused_with_one_message(api: httpx.AsyncClient) -> None:
    email, _ = await new_user(api, "wrongpw")
    wrong = await api.post("/api/auth/login", json={"email": email, "password": "not it at all"})
    unknown = await api.post(
        "/api/auth/login", json={"email": unique_email("nobody"), "password": PASSWORD}
    )
    assert error_of(wrong, 401)["detail"] == error_of(unknown, 401)["detail"]


# -- MFA ---------------------------------------------------------------------------------------
async def test_mfa_needs_a_verified_email(api: httpx.AsyncClient) -> None:
    _, user = await new_user(api, "mfa")
    refused = await api.post("/api/auth/mfa/enroll", headers=bearer(user["access_token"]))
    error_of(refused, 422, "verify your email")


async def test_mfa_enrol_confirm_login_with_totp_and_recovery_code(
    api: httpx.AsyncClient, server_side: Any
) -> None:
    email, first = await verified_user(api, server_side, "mfa")
    enrol = await api.post("/api/auth/mfa/enroll", headers=bearer(first["access_token"]))
    assert enrol.status_code == 200, enrol.text
    enrolment = enrol.json()
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/")
    assert enrolment["secret"] in enrolment["otpauth_uri"]
    assert base64.b64decode(enrolment["qr_png_base64"]).startswith(b"\x89PNG")
    totp = pyotp.TOTP(enrolment["secret"])

    spent = totp.now()
    confirm = await api.post(
        "/api/auth/mfa/confirm", json={"totp_code": spent}, headers=bearer(first["access_token"])
    )
    assert confirm.status_code == 200, confirm.text
    codes = confirm.json()["recovery_codes"]
    assert len(codes) >= 5
    assert len(set(codes)) == len(codes)
    assert (await me(api, first["access_token"])).json()["mfa_enabled"] is True

    # The password alone now gives a challenge, not tokens.
    answer = await login(api, email)
    assert answer["mfa_required"] is True
    assert answer["tokens"] is None
    challenge = answer["challenge"]
    assert "totp" in challenge["methods"]
    assert challenge["expires_in"] > 0
    # A wrong code, and the code spent confirming (never accepted twice), are refused.
    wrong = "000000" if totp.verify("000000", valid_window=1) is False else "999999"
    for code in (wrong, spent):
        refused = await api.post(
            "/api/auth/login/mfa",
            json={"challenge_token": challenge["challenge_token"], "totp_code": code},
        )
        error_of(refused, 401, "invalid MFA code")
    # The next 30-second step's code (accepted within the one-step drift window).
    done = await api.post(
        "/api/auth/login/mfa",
        json={
            "challenge_token": challenge["challenge_token"],
            "totp_code": totp.at(time.time() + 30),
        },
    )
    assert done.status_code == 200, done.text
    assert (await me(api, done.json()["access_token"])).status_code == 200

    # A recovery code works once.
    for attempt in range(2):
        challenge = (await login(api, email))["challenge"]
        used = await api.post(
            "/api/auth/login/mfa",
            json={"challenge_token": challenge["challenge_token"], "recovery_code": codes[0]},
        )
        if attempt == 0:
            assert used.status_code == 200, used.text
            assert (await me(api, used.json()["access_token"])).status_code == 200
        else:
            error_of(used, 401)

    # Neither or both codes: the gateway refuses the shape before auth sees it.
    challenge = (await login(api, email))["challenge"]
    both = await api.post(
        "/api/auth/login/mfa",
        json={
            "challenge_token": challenge["challenge_token"],
            "totp_code": totp.at(time.time() + 30),
            "recovery_code": codes[1],
        },
    )
    error_of(both, 400, "exactly one")


# -- OAuth -------------------------------------------------------------------------------------
async def test_oauth_login_against_the_local_provider(
    api: httpx.AsyncClient, oauth_redirect_uri: str
) -> None:
    listed = await api.get("/api/auth/oauth/providers")
    assert listed.status_code == 200, listed.text
    if "devoidc" not in [p["name"] for p in listed.json()["providers"]]:
        pytest.skip("the gateway's auth has no `devoidc` provider (the local OIDC provider)")

    email = unique_email("oauth")
    start = await api.get(
        "/api/auth/oauth/devoidc/start", params={"redirect_uri": oauth_redirect_uri}
    )
    assert start.status_code == 200, start.text
    url = urlparse(start.json()["authorization_url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["state"] == start.json()["state"]
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"]
    assert query["redirect_uri"] == oauth_redirect_uri
    query["login_hint"] = email
    # The browser step: the provider approves at once and redirects back with code and state.
    async with httpx.AsyncClient(timeout=10) as browser:
        approved = await browser.get(urlunparse(url._replace(query=urlencode(query))))
    assert approved.status_code == 302, approved.text
    location = approved.headers["location"]
    assert location.startswith(oauth_redirect_uri)
    back = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
    assert back["state"] == query["state"]

    finished = await api.get(
        "/api/auth/oauth/devoidc/callback", params={"code": back["code"], "state": back["state"]}
    )
    assert finished.status_code == 200, finished.text
    result = finished.json()
    assert result["created"] is True
    assert result["mfa_required"] is False
    profile = await me(api, result["tokens"]["access_token"])
    assert profile.status_code == 200, profile.text
    assert profile.json()["email"] == email
    assert profile.json()["email_verified"] is True
    assert profile.json()["oauth_providers"] == ["devoidc"]

    # The code is single use: replaying the callback is refused.
    replay = await api.get(
        "/api/auth/oauth/devoidc/callback", params={"code": back["code"], "state": back["state"]}
    )
    error_of(replay, 401)  # the state was taken by the first callback
    assert 400 <= replay.status_code < 500
    denied = await api.get("/api/auth/oauth/devoidc/callback", params={"error": "access_denied"})
    error_of(denied, 400, "access_denied")


# -- RBAC --------------------------------------------------------------------------------------
async def test_admin_route_needs_users_admin_and_promotion_reaches_the_next_token(
    api: httpx.AsyncClient, server_side: Any
) -> None:
    admin_email, admin_tokens = await new_user(api, "admin")
    _target_email, target_tokens = await new_user(api, "target")
    target_id = claims(target_tokens["access_token"])["sub"]
    assert claims(target_tokens["access_token"])["plan"] == "free"

    refused = await api.put(
        f"/api/admin/users/{target_id}/access",
        json={"plan": "premium"},
        headers=bearer(admin_tokens["access_token"]),
    )
    error_of(refused, 403)

    await server_side.promote(admin_email, "admin")
    promoted = await tokens(api, admin_email)
    assert claims(promoted["access_token"])["plan"] == "admin"
    assert "users:admin" in claims(promoted["access_token"])["perms"]

    changed = await api.put(
        f"/api/admin/users/{target_id}/access",
        json={"plan": "premium"},
        headers=bearer(promoted["access_token"]),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["plan"] == "premium"
    assert changed.json()["id"] == target_id

    # A promotion shows in the target's next refreshed token (and in /me, whose cache dropped).
    refreshed = await api.post(
        "/api/auth/refresh", json={"refresh_token": target_tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    new_claims = claims(refreshed.json()["access_token"])
    assert new_claims["plan"] == "premium"
    assert "ai:deep" in new_claims["perms"]
    assert (await me(api, refreshed.json()["access_token"])).json()["plan"] == "premium"

    bad = await api.put(
        f"/api/admin/users/{target_id}/access",
        json={"plan": "platinum"},
        headers=bearer(promoted["access_token"]),
    )
    error_of(bad, 400, "plan")
    missing = await api.put(
        f"/api/admin/users/{uuid.uuid4()}/access",  # a well-formed id nobody has
        json={"plan": "premium"},
        headers=bearer(promoted["access_token"]),
    )
    error_of(missing, 404)


# -- rate limits -------------------------------------------------------------------------------
async def test_free_user_61st_request_in_a_minute_is_429(api: httpx.AsyncClient) -> None:
    _, user = await new_user(api, "rate")
    headers = bearer(user["access_token"])
    for n in range(FREE_LIMIT):
        response = await api.get("/api/auth/me", headers=headers)
        assert response.status_code == 200, (n, response.text)
        assert response.headers["X-RateLimit-Limit"] == str(FREE_LIMIT)
        assert response.headers["X-RateLimit-Remaining"] == str(FREE_LIMIT - n - 1)
    limited = await api.get("/api/auth/me", headers=headers)
    body = error_of(limited, 429)
    assert body["error"] == "rate_limited"
    assert limited.headers["X-RateLimit-Limit"] == str(FREE_LIMIT)
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert body["detail"] == f"Rate limit exceeded. Try again in {retry_after} seconds."
    # Every route counts, not only /me.
    error_of(await api.get("/api/auth/me/export", headers=headers), 429)


async def test_200_concurrent_requests_let_at_most_60_through(gateway_url: str) -> None:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60, limits=limits) as api:
        _, user = await new_user(api, "burst")
        headers = bearer(user["access_token"])
        responses = await asyncio.gather(
            *(api.get("/api/auth/me", headers=headers) for _ in range(200))
        )
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    assert statuses.count(200) <= FREE_LIMIT
    assert statuses.count(200) == FREE_LIMIT  # nothing else spent this user's window
    for response in responses:
        if response.status_code == 429:
            error_of(response, 429, r"^Rate limit exceeded\. Try again in \d+ seconds\.$")


# -- bad input ---------------------------------------------------------------------------------
async def test_bad_register_bodies_are_400_in_the_error_shape(api: httpx.AsyncClient) -> None:
    email = unique_email("bad")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"content": b'{"email": "x@example.com", "password": '}, "malformed JSON"),
        ({"content": b"not json at all"}, "malformed JSON"),
        ({"json": {"email": "not-an-email", "password": PASSWORD}}, "email"),
        ({"json": {"email": "a@b", "password": PASSWORD}}, "email"),
        ({"json": {"email": email, "password": "short"}}, "password"),
        ({"json": {"email": email, "password": "aaaaaaaaaaaaaaa"}}, "password"),
        ({"json": {"email": email, "password": "password123"}}, "password"),
        ({"json": {"email": email, "password": PASSWORD, "role": "admin"}}, "role"),
        ({"json": {"email": 123, "password": PASSWORD}}, "email"),
        ({"json": {"email": email, "password": ["x" * 12]}}, "password"),
        ({"json": {"email": email, "password": PASSWORD, "display_name": 7}}, "display_name"),
        ({"json": {"email": email}}, "password"),
        ({"json": [email, PASSWORD]}, "."),
        ({"json": None}, "."),
    ]
    for kwargs, detail in cases:
        kwargs.setdefault("headers", {"Content-Type": "application/json"})
        response = await api.post("/api/auth/register", **kwargs)
        assert response.status_code != 500
        error_of(response, 400, detail)
    # Nothing was half-written by the failed attempts: the same address registers now.
    await register(api, email)
    await tokens(api, email)
    taken = await api.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    error_of(taken, 409)


async def test_huge_body_is_413(api: httpx.AsyncClient) -> None:
    big = json.dumps({"email": unique_email(), "password": "x" * (2 * 1024 * 1024)})
    response = await api.post(
        "/api/auth/register", content=big, headers={"Content-Type": "application/json"}
    )
    error_of(response, 413)

    async def chunks() -> Any:  # no Content-Length: the limit holds for streamed bodies too
        for _ in range(40):
            yield b"x" * 65536

    streamed = await api.post(
        "/api/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    error_of(streamed, 413)


async def test_other_routes_refuse_unknown_fields_and_wrong_types(api: httpx.AsyncClient) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/api/auth/login", {"email": "x@example.com", "password": PASSWORD, "otp": 1}, "otp"),
        ("/api/auth/login", {"email": "x@example.com", "password": 12345678}, "password"),
        ("/api/auth/refresh", {"refresh_token": 5}, "refresh_token"),
        ("/api/auth/refresh", {}, "refresh_token"),
        ("/api/auth/login/mfa", {"challenge_token": "x", "totp_code": "12ab56"}, "totp_code"),
        ("/api/auth/email/verify", {"token": ""}, "token"),
        ("/api/auth/password/forgot", {"email": "nope"}, "email"),
    ]
    for path, body, detail in cases:
        error_of(await api.post(path, json=body), 400, detail)
    # Well-formed but unknown: auth's refusal, in the same shape.
    error_of(await api.post("/api/auth/refresh", json={"refresh_token": "x" * 43}), 401)
    error_of(await api.post("/api/auth/email/verify", json={"token": "x" * 43}), 400)


async def test_bad_tokens_are_401_in_the_error_shape(api: httpx.AsyncClient) -> None:
    _, user = await new_user(api, "tokens")
    real = user["access_token"]
    head, payload, signature = real.split(".")
    real_claims = claims(real)
    kid = header_of(real)["kid"]
    stranger = Ed25519PrivateKey.generate()
    now = int(time.time())

    def signed(extra: dict[str, Any]) -> str:
        return jwt.encode(
            real_claims | extra, stranger, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"}
        )

    flipped = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    forged: dict[str, str] = {
        "expired": signed({"iat": now - 7200, "exp": now - 3600}),
        "random key": signed({}),
        "tampered claims": f"{head}.{b64(real_claims | {'plan': 'admin'})}.{signature}",
        "tampered signature": f"{head}.{payload}.{flipped}",
        "alg none": f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{payload}.",
        "alg HS256": jwt.encode(
            real_claims,
            "not-the-key-" * 4,
            algorithm="HS256",
            headers={"kid": kid, "typ": "at+jwt"},
        ),
        "not a JWT": "definitely-not-a-jwt",
        "truncated": real[: len(real) // 2],
    }
    for name, token in forged.items():
        response = await me(api, token)
        assert response.status_code != 500, name
        body = error_of(response, 401)
        assert body["error"], name
    # Not a Bearer header at all.
    basic = await api.get("/api/auth/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    error_of(basic, 401, "Bearer")
    error_of(await api.get("/api/auth/me"), 401)
    # The real one still works (nothing above affected it).
    assert (await me(api, real)).status_code == 200
