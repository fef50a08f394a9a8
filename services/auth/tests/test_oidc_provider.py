"""The local OIDC provider (aether_devstack.oidc_provider) behaves like a strict real one."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import pytest


def s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


@pytest.fixture
async def http(oidc_provider: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=oidc_provider.issuer) as client:
        yield client


def authorize_params(oidc_provider: Any, verifier: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": oidc_provider.client_id,
        "redirect_uri": oidc_provider.redirect_uri,
        "scope": "openid email",
        "state": "st",
        "nonce": "n-123",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "login_hint": "grace@example.com",
        **extra,
    }


async def get_code(http: httpx.AsyncClient, params: dict[str, str]) -> dict[str, str]:
    response = await http.get("/authorize", params=params)
    assert response.status_code == 302, response.text
    return {k: v[0] for k, v in parse_qs(urlparse(response.headers["location"]).query).items()}


async def test_code_flow_with_pkce(http: httpx.AsyncClient, oidc_provider: Any) -> None:
    discovery = (await http.get("/.well-known/openid-configuration")).json()
    assert discovery["issuer"] == oidc_provider.issuer
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    verifier = secrets.token_urlsafe(48)
    back = await get_code(http, authorize_params(oidc_provider, verifier))
    assert back["state"] == "st"
    form = {
        "grant_type": "authorization_code",
        "code": back["code"],
        "redirect_uri": oidc_provider.redirect_uri,
        "code_verifier": verifier,
    }
    auth = (oidc_provider.client_id, oidc_provider.client_secret)
    answer = await http.post("/token", data=form, auth=auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    keys = jwt.PyJWKSet.from_dict((await http.get("/jwks")).json())
    kid = jwt.get_unverified_header(body["id_token"])["kid"]
    claims = jwt.decode(
        body["id_token"],
        keys[kid],
        algorithms=["RS256"],
        audience=oidc_provider.client_id,
        issuer=oidc_provider.issuer,
    )
    assert claims["nonce"] == "n-123"
    assert claims["email"] == "grace@example.com"
    assert claims["email_verified"] is True
    assert claims["sub"]
    info = await http.get("/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info.json()["sub"] == claims["sub"]
    # A code works once.
    again = await http.post("/token", data=form, auth=auth)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


async def test_refusals(http: httpx.AsyncClient, oidc_provider: Any) -> None:
    verifier = secrets.token_urlsafe(48)
    params = authorize_params(oidc_provider, verifier)
    bad_client = await http.get("/authorize", params=params | {"client_id": "evil"})
    assert bad_client.status_code == 400
    bad_redirect = await http.get("/authorize", params=params | {"redirect_uri": "https://x/cb"})
    assert bad_redirect.status_code == 400  # never redirected to an unregistered URI
    no_pkce = await get_code(http, params | {"code_challenge_method": "plain"})
    assert no_pkce["error"] == "invalid_request"

    back = await get_code(http, params)
    form = {
        "grant_type": "authorization_code",
        "code": back["code"],
        "redirect_uri": oidc_provider.redirect_uri,
        "code_verifier": "not-the-verifier-" + "x" * 30,
    }
    wrong_secret = await http.post("/token", data=form, auth=(oidc_provider.client_id, "nope"))
    assert wrong_secret.status_code == 401
    assert wrong_secret.json()["error"] == "invalid_client"
    wrong_verifier = await http.post(
        "/token",
        data=form
        | {"client_id": oidc_provider.client_id, "client_secret": oidc_provider.client_secret},
    )
    assert wrong_verifier.status_code == 400
    assert "PKCE" in wrong_verifier.json()["error_description"]
