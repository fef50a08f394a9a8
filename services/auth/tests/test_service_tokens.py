"""Service identity: IssueServiceToken (OAuth 2.0 client credentials) against a real auth."""

from __future__ import annotations

import json
import secrets
from typing import Any

import jwt
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from aether.auth.v1 import auth_pb2
from aether_auth.config import (
    AuthSettings,
    ServiceClientSettings,
    dev_service_secret,
    secret_sha256,
)

SECRET = secrets.token_urlsafe(32)


def _clients(**secrets_by_id: str) -> dict[str, ServiceClientSettings]:
    return {
        client_id: ServiceClientSettings(
            secret_sha256=secret_sha256(secret), permissions=["charts:read"]
        )
        for client_id, secret in secrets_by_id.items()
    }


def _issue(auth: Any, client_id: str, secret: str) -> Any:
    return auth.stub.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(client_id=client_id, client_secret=secret)
    )


def _count(client: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "aether_auth_service_tokens_total", {"client": client, "outcome": outcome}
    )
    return value or 0.0


async def test_service_token_claims(start_auth: Any) -> None:
    auth = await start_auth(service_clients=_clients(alerts=SECRET), service_token_ttl_s=120)
    issued = await _issue(auth, "alerts", SECRET)

    header = jwt.get_unverified_header(issued.access_token)
    assert (header["alg"], header["typ"]) == ("EdDSA", "at+jwt")
    # Signed by the same keys as users' tokens: the one JWKS verifies it.
    jwks = json.loads((await auth.stub.GetJwks(auth_pb2.GetJwksRequest())).jwks_json)
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(
        issued.access_token, key, algorithms=["EdDSA"], audience="aether", issuer="aether-auth"
    )
    assert claims["sub"] == claims["sid"] == "service:alerts"
    assert claims["client_id"] == "alerts"
    assert claims["roles"] == ["service"]
    assert claims["perms"] == ["charts:read"]
    assert claims["exp"] - claims["iat"] == 120
    assert issued.expires_time.seconds == claims["exp"]
    assert "email" not in claims
    assert "plan" not in claims


async def test_wrong_secret_or_unknown_client_is_refused_and_counted(
    start_auth: Any, kit: Any
) -> None:
    auth = await start_auth(service_clients=_clients(alerts=SECRET))
    before = _count("alerts", "bad_credentials"), _count("unknown", "bad_credentials")
    wrong = await kit.failure(_issue(auth, "alerts", SECRET + "x"))
    unknown = await kit.failure(_issue(auth, "nobody", SECRET))
    # One answer for both: a caller learns nothing about which client ids exist.
    for error in (wrong, unknown):
        assert (error.http_status, error.detail) == (401, "invalid client id or secret")
        assert error.error_code == "invalid_client"
    after = _count("alerts", "bad_credentials"), _count("unknown", "bad_credentials")
    assert after == (before[0] + 1, before[1] + 1)

    empty = await kit.failure(_issue(auth, "alerts", ""))
    assert empty.http_status == 400


async def test_repeated_failures_throttle_the_client_id(start_auth: Any, kit: Any) -> None:
    auth = await start_auth(
        service_clients=_clients(alerts=SECRET, charts=SECRET), service_failure_limit=3
    )
    for _ in range(3):
        assert (await kit.failure(_issue(auth, "alerts", "guess-" + SECRET))).http_status == 401
    # Now even the right secret waits out the window; other clients are not affected.
    throttled = await kit.failure(_issue(auth, "alerts", SECRET))
    assert (throttled.http_status, throttled.error_code) == (429, "client_throttled")
    assert throttled.retry_after is not None
    assert 0 < throttled.retry_after <= 60
    assert (await _issue(auth, "charts", SECRET)).access_token


async def test_service_token_cannot_call_account_rpcs(start_auth: Any, kit: Any) -> None:
    auth = await start_auth(service_clients=_clients(alerts=SECRET))
    token = (await _issue(auth, "alerts", SECRET)).access_token
    error = await kit.failure(auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(token)))
    assert (error.http_status, error.error_code) == (403, "service_token")


def test_placeholder_secret_hash_is_refused_outside_dev(auth_settings: AuthSettings) -> None:
    dev_clients = {"service_clients": _clients(alerts=dev_service_secret("alerts"))}
    base = auth_settings.model_dump() | dev_clients
    with pytest.raises(ValidationError, match="placeholder secret refused outside dev: alerts"):
        AuthSettings.model_validate(base | {"environment": "test"})
    assert AuthSettings.model_validate(base | {"environment": "dev"}).service_clients


async def test_any_placeholder_secret_is_refused_at_issue_outside_dev(
    start_auth: Any, kit: Any
) -> None:
    # A placeholder whose hash the settings could not recognise: caught when it is presented.
    placeholder = "change-me-" + secrets.token_hex(4)
    auth = await start_auth(service_clients=_clients(alerts=placeholder))
    error = await kit.failure(_issue(auth, "alerts", placeholder))
    assert error.http_status == 401
    assert "placeholder client secret is refused outside dev" in error.detail
