"""GDPR: export everything held about the caller; delete the account and tell every service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import httpx

from aether.auth.v1 import auth_pb2, events_pb2
from aether_auth import events, mfa


async def test_export_holds_everything_and_no_secrets(auth: Any, kit: Any, maildir: Path) -> None:
    email, tokens = await auth.verified_user()
    md = kit.bearer(tokens.access_token)
    begun = await auth.stub.BeginMfaEnrollment(auth_pb2.BeginMfaEnrollmentRequest(), metadata=md)
    codes = (
        await auth.stub.ConfirmMfaEnrollment(
            auth_pb2.ConfirmMfaEnrollmentRequest(totp_code=mfa.current_totp(begun.secret)),
            metadata=md,
        )
    ).recovery_codes
    await kit.failure(auth.login(email, "a wrong password"))

    exported = (await auth.stub.ExportMyData(auth_pb2.ExportMyDataRequest(), metadata=md)).json
    data = json.loads(exported)
    assert data["user"]["email"] == email
    assert data["user"]["email_verified"]
    assert data["user"]["plan"] == "free"
    assert data["user"]["has_password"]
    assert data["mfa"] == {
        "enabled": True,
        "method": "totp",
        "enrolled_at": data["mfa"]["enrolled_at"],
        "recovery_codes_left": 10,
    }
    assert len(data["sessions"]) == 1
    assert data["sessions"][0]["ip"] == "203.0.113.7"
    assert data["oauth_identities"] == []
    assert [(e["success"], e["reason"]) for e in data["login_history"]] == [
        (False, "bad_credentials"),
        (True, ""),
    ]
    password_hash = (await auth.sql("SELECT password_hash FROM users"))[0]["password_hash"]
    for secret in (begun.secret, password_hash, codes[0], tokens.refresh_token):
        assert secret not in exported


async def test_delete_erases_revokes_and_publishes_user_deleted(
    start_auth: Any, kit: Any, maildir: Path
) -> None:
    auth = await start_auth(events=True)  # the outbox relay publishes to Kafka
    email, tokens = await auth.verified_user()
    user_id = (
        await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(tokens.access_token))
    ).user.id
    md = kit.bearer(tokens.access_token)

    wrong = await kit.failure(
        auth.stub.DeleteMyAccount(
            auth_pb2.DeleteMyAccountRequest(password="not my password"), metadata=md
        )
    )
    assert wrong.http_status == 403
    empty = await kit.failure(
        auth.stub.DeleteMyAccount(auth_pb2.DeleteMyAccountRequest(), metadata=md)
    )
    assert empty.http_status == 400
    assert "password" in empty.field_errors

    await auth.stub.DeleteMyAccount(
        auth_pb2.DeleteMyAccountRequest(password=auth.PASSWORD), metadata=md
    )
    for table in (
        "users",
        "sessions",
        "refresh_tokens",
        "email_tokens",
        "login_history",
        "mfa_totp",
        "recovery_codes",
        "oauth_identities",
    ):
        assert await auth.sql(f"SELECT * FROM {table}") == [], table  # noqa: S608
    gone = await kit.failure(auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=md))
    assert gone.http_status == 401
    refresh = await kit.failure(
        auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token))
    )
    assert refresh.http_status == 401
    assert (await kit.failure(auth.login(email))).detail == "invalid email or password"

    # The event reaches Kafka through the outbox: read it back with a real consumer.
    topic = auth.settings.topic_prefix + events.DELETED
    records = await kit.read_topic(auth.settings.kafka_bootstrap, topic, 1)
    record = records[0]
    assert record.key == user_id.encode()
    headers = {k: v.decode() for k, v in record.headers}
    assert headers["ce_type"] == topic
    assert headers["ce_source"] == "auth"
    assert headers["ce_subject"] == user_id
    assert headers["ce_dataschema"] == "aether.auth.v1.UserDeleted"
    assert events_pb2.UserDeleted.FromString(record.value).user_id == user_id
    # The other events made it too, in order, keyed by the user.
    registered = await kit.read_topic(
        auth.settings.kafka_bootstrap, auth.settings.topic_prefix + events.REGISTERED, 1
    )
    assert registered[0].key == user_id.encode()


async def test_an_oauth_only_account_deletes_without_a_password(auth: Any, kit: Any) -> None:
    redirect_uri = auth.settings.oauth_providers[0].redirect_uris[0]
    start = await auth.stub.StartOAuth(
        auth_pb2.StartOAuthRequest(provider="devoidc", redirect_uri=redirect_uri)
    )
    url = urlparse(start.authorization_url)
    query = {k: v[0] for k, v in parse_qs(url.query).items()} | {"login_hint": kit.unique_email()}
    async with httpx.AsyncClient() as http:
        location = (await http.get(urlunparse(url._replace(query=urlencode(query))))).headers[
            "location"
        ]
    back = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
    signed_in = await auth.stub.FinishOAuth(
        auth_pb2.FinishOAuthRequest(provider="devoidc", code=back["code"], state=back["state"])
    )
    md = kit.bearer(signed_in.tokens.access_token)
    await auth.stub.DeleteMyAccount(auth_pb2.DeleteMyAccountRequest(), metadata=md)
    assert await auth.sql("SELECT * FROM oauth_identities") == []
    deleted = await auth.events(events.DELETED, events_pb2.UserDeleted)
    assert len(deleted) == 1
