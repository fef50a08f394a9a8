"""OAuth / OIDC login (code + PKCE) against the local OIDC provider, a real HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import httpx

from aether.auth.v1 import auth_pb2, events_pb2
from aether_auth import events, mfa
from aether_auth.config import OAuthProviderSettings
from aether_devstack.servers import free_port

PROVIDER = "devoidc"


async def authorize(
    auth: Any,
    email: str,
    *,
    verified: bool = True,
    sub: str = "",
    edit: dict[str, str] | None = None,
) -> tuple[str, str]:
    """What a browser does: follow the authorization URL as `email`; returns (code, state)."""
    redirect_uri = auth.settings.oauth_providers[0].redirect_uris[0]
    start = await auth.stub.StartOAuth(
        auth_pb2.StartOAuthRequest(provider=PROVIDER, redirect_uri=redirect_uri)
    )
    url = urlparse(start.authorization_url)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["code_challenge_method"] == "S256"
    assert query["state"] == start.state
    assert query["nonce"]
    assert query["code_challenge"]
    assert "openid" in query["scope"]
    query |= {"login_hint": email, "test_email_verified": str(verified).lower()}
    if sub:
        query["test_sub"] = sub
    query |= edit or {}
    async with httpx.AsyncClient() as http:
        response = await http.get(urlunparse(url._replace(query=urlencode(query))))
    assert response.status_code == 302, response.text
    location = urlparse(response.headers["location"])
    assert location.geturl().startswith(redirect_uri)
    back = {k: v[0] for k, v in parse_qs(location.query).items()}
    return back["code"], back["state"]


async def finish(auth: Any, code: str, state: str) -> auth_pb2.FinishOAuthResponse:
    response: auth_pb2.FinishOAuthResponse = await auth.stub.FinishOAuth(
        auth_pb2.FinishOAuthRequest(provider=PROVIDER, code=code, state=state, client=auth.CLIENT)
    )
    return response


async def me(auth: Any, kit: Any, access_token: str) -> auth_pb2.User:
    answer: auth_pb2.GetMeResponse = await auth.stub.GetMe(
        auth_pb2.GetMeRequest(), metadata=kit.bearer(access_token)
    )
    return answer.user


async def test_providers_are_listed(auth: Any) -> None:
    listed = await auth.stub.ListOAuthProviders(auth_pb2.ListOAuthProvidersRequest())
    assert [(p.name, p.display_name) for p in listed.providers] == [(PROVIDER, "Dev OIDC")]


async def test_first_login_creates_the_account_then_signs_in_to_it(auth: Any, kit: Any) -> None:
    email = kit.unique_email("oauth")
    created = await finish(auth, *await authorize(auth, email))
    assert created.created
    assert created.WhichOneof("result") == "tokens"
    user = await me(auth, kit, created.tokens.access_token)
    assert user.email == email
    assert user.email_verified
    assert list(user.oauth_providers) == [PROVIDER]
    registered = await auth.events(events.REGISTERED, events_pb2.UserRegistered)
    assert [e.payload.method for e in registered] == ["oauth:devoidc"]

    again = await finish(auth, *await authorize(auth, email))
    assert not again.created
    assert (await me(auth, kit, again.tokens.access_token)).id == user.id
    logins = await auth.events(events.LOGGED_IN, events_pb2.UserLoggedIn)
    assert [e.payload.method for e in logins] == ["oauth:devoidc"] * 2
    # No password was set: password login is refused like any wrong password.
    error = await kit.failure(auth.login(email, "anything at all"))
    assert error.detail == "invalid email or password"


async def test_links_to_a_verified_local_account_by_verified_email(
    auth: Any, kit: Any, maildir: Path
) -> None:
    email, _ = await auth.verified_user()
    linked = await finish(auth, *await authorize(auth, email))
    assert not linked.created
    user = await me(auth, kit, linked.tokens.access_token)
    assert list(user.oauth_providers) == [PROVIDER]
    await auth.tokens(email)  # the password still works
    assert len(await auth.sql("SELECT * FROM users")) == 1


async def test_claiming_an_unverified_local_account_drops_its_password(auth: Any, kit: Any) -> None:
    # Someone registered the address without proving it; its verified owner arrives by OAuth.
    email = kit.unique_email()
    squatter = await auth.register(email)
    squatter_tokens = await auth.tokens(email)
    linked = await finish(auth, *await authorize(auth, email))
    owner = await me(auth, kit, linked.tokens.access_token)
    assert owner.id == squatter.id
    assert owner.email_verified
    assert (await kit.failure(auth.login(email))).http_status == 401
    revoked = await kit.failure(
        auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(squatter_tokens.access_token))
    )
    assert revoked.http_status == 401


async def test_an_unverified_provider_email_never_links(auth: Any, kit: Any) -> None:
    email = kit.unique_email()
    await auth.register(email)
    refused = await kit.failure(finish(auth, *await authorize(auth, email, verified=False)))
    assert refused.http_status == 422
    assert "not verified" in refused.detail
    assert await auth.sql("SELECT * FROM oauth_identities") == []

    # With no account of that address, one is made, unverified.
    other = kit.unique_email()
    created = await finish(auth, *await authorize(auth, other, verified=False))
    assert created.created
    assert not (await me(auth, kit, created.tokens.access_token)).email_verified


async def test_bad_state_is_refused(auth: Any, kit: Any) -> None:
    code, state = await authorize(auth, kit.unique_email())
    forged = await kit.failure(finish(auth, code, "forged-state"))
    assert forged.http_status == 401
    assert forged.error_code == "invalid_state"
    await finish(auth, code, state)
    replayed = await kit.failure(finish(auth, code, state))  # each state works once
    assert replayed.http_status == 401
    assert replayed.error_code == "invalid_state"
    missing = await kit.failure(finish(auth, code, ""))
    assert missing.http_status == 400
    assert "state" in missing.field_errors


async def test_nonce_mismatch_is_refused(auth: Any, kit: Any) -> None:
    # The provider signs whatever nonce the (tampered) request carried: not this login's.
    email = kit.unique_email()
    code, state = await authorize(auth, email, edit={"nonce": "someone-elses-nonce"})
    error = await kit.failure(finish(auth, code, state))
    assert error.http_status == 401
    assert "nonce does not match" in error.detail
    assert await auth.sql("SELECT * FROM users") == []


async def test_pkce_is_enforced_by_the_exchange(auth: Any, kit: Any) -> None:
    # A code obtained for another verifier's challenge cannot be redeemed with ours.
    code, state = await authorize(auth, kit.unique_email(), edit={"code_challenge": "x" * 43})
    error = await kit.failure(finish(auth, code, state))
    assert error.http_status == 401
    assert "invalid_grant" in error.detail


async def test_start_refuses_unknown_providers_and_redirects(auth: Any, kit: Any) -> None:
    unknown = await kit.failure(
        auth.stub.StartOAuth(auth_pb2.StartOAuthRequest(provider="nope", redirect_uri="x"))
    )
    assert unknown.http_status == 404
    evil = await kit.failure(
        auth.stub.StartOAuth(
            auth_pb2.StartOAuthRequest(provider=PROVIDER, redirect_uri="https://evil.example/cb")
        )
    )
    assert evil.http_status == 400
    assert "redirect_uri" in evil.field_errors


async def test_mfa_accounts_get_a_challenge_after_oauth(auth: Any, kit: Any, maildir: Path) -> None:
    email, tokens = await auth.verified_user()
    md = kit.bearer(tokens.access_token)
    begun = await auth.stub.BeginMfaEnrollment(auth_pb2.BeginMfaEnrollmentRequest(), metadata=md)
    await auth.stub.ConfirmMfaEnrollment(
        auth_pb2.ConfirmMfaEnrollmentRequest(totp_code=mfa.current_totp(begun.secret)),
        metadata=md,
    )
    result = await finish(auth, *await authorize(auth, email))
    assert result.WhichOneof("result") == "mfa_required"


async def test_an_unreachable_provider_is_unavailable(start_auth: Any, kit: Any) -> None:
    dead = OAuthProviderSettings.model_validate(
        {
            "name": "down",
            "issuer": f"http://127.0.0.1:{free_port()}",
            "client_id": "c",
            "client_secret": "s3cret-value",
            "redirect_uris": ["http://127.0.0.1/cb"],
        }
    )
    auth = await start_auth(oauth_providers=[dead])
    error = await kit.failure(
        auth.stub.StartOAuth(
            auth_pb2.StartOAuthRequest(provider="down", redirect_uri="http://127.0.0.1/cb")
        )
    )
    assert error.http_status == 503
    assert "down" in error.detail
