"""Unit tests (no I/O): settings, email and password rules, TOTP, recovery codes, secrets at
rest, permissions, the migration's copy of the outbox DDL."""

from __future__ import annotations

import importlib.resources
import time
import tomllib
from pathlib import Path

import pyotp
import pytest

from aether.auth.v1 import auth_pb2
from aether_auth import events, mfa
from aether_auth.config import AuthSettings
from aether_auth.crypto import SecretBoxError, new_box
from aether_auth.passwords import Passwords, meets_owasp_minimum, policy_violation
from aether_auth.rbac import (
    USERS_ADMIN,
    Plan,
    Role,
    permissions_for,
    plan_from_pb,
    plan_to_pb,
    role_from_pb,
)
from aether_auth.validation import normalize_email
from aether_common.events import OUTBOX_DDL
from aether_common.settings import SettingsError, load_settings

REQUIRED_ENV = {
    "AETHER_ENV": "dev",
    "AETHER_DATABASE_URL": "postgresql://localhost/aether_auth",
    "AETHER_REDIS_URL": "redis://localhost:6379/0",
    "AETHER_KAFKA_BOOTSTRAP": "localhost:9092",
    "AETHER_SMTP_HOST": "127.0.0.1",
    "AETHER_SMTP_PORT": "1025",
    "AUTH_PUBLIC_BASE_URL": "http://127.0.0.1:8080/",
    "AUTH_KEY_ENCRYPTION_SECRET": "dev-only-auth-secret",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in REQUIRED_ENV.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


# -- settings ----------------------------------------------------------------------------------
def test_settings_from_the_devstack_names(env: pytest.MonkeyPatch) -> None:
    settings = load_settings(AuthSettings)
    assert settings.database_url.endswith("/aether_auth")
    assert settings.public_base_url == "http://127.0.0.1:8080"
    assert (settings.access_token_ttl_s, settings.refresh_token_ttl_s) == (900, 30 * 86400)
    assert (settings.argon2_time_cost, settings.argon2_memory_kib) == (5, 7 * 1024)
    assert settings.oauth_providers == []
    # The service's own names win over the platform's.
    env.setenv("AUTH_DATABASE_URL", "postgresql://elsewhere/auth")
    assert load_settings(AuthSettings).database_url == "postgresql://elsewhere/auth"


def test_missing_settings_are_named(env: pytest.MonkeyPatch) -> None:
    env.delenv("AUTH_KEY_ENCRYPTION_SECRET")
    env.delenv("AETHER_REDIS_URL")
    with pytest.raises(SettingsError) as raised:
        load_settings(AuthSettings)
    assert "missing required setting AUTH_KEY_ENCRYPTION_SECRET" in str(raised.value)
    assert "missing required setting AUTH_REDIS_URL" in str(raised.value)


def test_placeholder_secrets_are_refused_outside_dev(env: pytest.MonkeyPatch) -> None:
    env.setenv("AETHER_ENV", "prod")
    with pytest.raises(SettingsError, match="AUTH_KEY_ENCRYPTION_SECRET"):
        load_settings(AuthSettings)
    env.setenv("AUTH_KEY_ENCRYPTION_SECRET", "a-real-secret-from-the-vault")
    env.setenv(
        "AUTH_OAUTH_PROVIDERS",
        '[{"name": "google", "issuer": "https://accounts.google.com", "client_id": "c",'
        ' "client_secret": "change-me", "redirect_uris": ["https://app.example/cb"]}]',
    )
    with pytest.raises(SettingsError, match="placeholder client_secret"):
        load_settings(AuthSettings)


def test_oauth_providers_from_json(env: pytest.MonkeyPatch) -> None:
    env.setenv(
        "AUTH_OAUTH_PROVIDERS",
        '[{"name": "google", "issuer": "https://accounts.google.com", "client_id": "c",'
        ' "client_secret": "s", "redirect_uris": ["https://app.example/cb"]}]',
    )
    (google,) = load_settings(AuthSettings).oauth_providers
    assert google.discovery_document_url == (
        "https://accounts.google.com/.well-known/openid-configuration"
    )
    assert google.label == "Google"
    assert google.scopes == ["openid", "email", "profile"]
    env.setenv("AUTH_OAUTH_PROVIDERS", '[{"name": "Bad Name"}]')
    with pytest.raises(SettingsError, match="AUTH_OAUTH_PROVIDERS"):
        load_settings(AuthSettings)


# -- input rules -------------------------------------------------------------------------------
def test_email_normalisation() -> None:
    assert normalize_email("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"
    for bad in ("", "ada", "ada@", "@example.com", "ada@@example.com", "a" * 250 + "@x.io"):
        with pytest.raises(ValueError, match=r"is required|is not a valid|at most"):
            normalize_email(bad)


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short", "at least 10"),
        ("x" * 129, "at most 128"),
        ("          ", "blank"),
        ("Password123", "too common"),
        ("abababababab", "different characters"),
        ("ada.lovelace-2024!", "email"),
        ("correct horse battery staple", None),
    ],
)
def test_password_policy(password: str, problem: str | None) -> None:
    found = policy_violation(password, email="ada.lovelace@example.com", min_length=10)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


async def test_argon2id_hashing_and_rehash_on_parameter_change() -> None:
    weak = Passwords(time_cost=1, memory_kib=8 * 1024, workers=1)
    strong = Passwords(workers=1)
    try:
        old_hash = await weak.hash("correct horse battery staple")
        assert old_hash.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
        check = await strong.verify(old_hash, "correct horse battery staple")
        assert check.ok
        assert check.needs_rehash
        new_hash = await strong.hash("correct horse battery staple")
        assert new_hash.startswith("$argon2id$v=19$m=7168,t=5,p=1$")
        assert not (await strong.verify(new_hash, "correct horse battery staple")).needs_rehash
        assert not (await strong.verify(new_hash, "wrong")).ok
        assert not (await strong.verify("not a hash", "wrong")).ok
        assert not (await strong.verify("$argon2id$v=19$ünïcode", "wrong")).ok
    finally:
        await weak.stop()
        await strong.stop()


async def test_hashes_from_other_argon2id_implementations_verify() -> None:
    # Made by argon2-cffi (the hasher before libsodium) with two lanes: still a valid login,
    # rehashed to the configured one-lane parameters.
    earlier = (
        "$argon2id$v=19$m=8192,t=1,p=2$gGNSLLlYLAhZUZVXJtLL4Q$"
        "vt0s55hVtdiWqGsNsFTiqkUDzR3+mqslrtTkxBuX88I"
    )
    passwords = Passwords(workers=1)
    try:
        check = await passwords.verify(earlier, "pw")
        assert check.ok
        assert check.needs_rehash
        assert not (await passwords.verify(earlier, "pw2")).ok
    finally:
        await passwords.stop()


@pytest.mark.parametrize(
    ("time_cost", "memory_kib", "meets"),
    [
        (5, 7 * 1024, True),
        (2, 19 * 1024, True),
        (1, 46 * 1024, True),
        (4, 12 * 1024, True),
        (4, 7 * 1024, False),
        (1, 19 * 1024, False),
        (64, 4 * 1024, False),
    ],
)
def test_owasp_minimum(time_cost: int, memory_kib: int, meets: bool) -> None:
    assert meets_owasp_minimum(time_cost, memory_kib) is meets


def test_weaker_hashing_than_owasp_is_refused_outside_dev_and_test(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("AUTH_ARGON2_TIME_COST", "1")
    env.setenv("AUTH_ARGON2_MEMORY_KIB", "8192")
    assert load_settings(AuthSettings).argon2_time_cost == 1  # AETHER_ENV=dev
    env.setenv("AETHER_ENV", "prod")
    env.setenv("AUTH_KEY_ENCRYPTION_SECRET", "a-real-secret-of-some-length-0123456789")
    with pytest.raises(SettingsError, match="weaker than every OWASP argon2id configuration"):
        load_settings(AuthSettings)
    env.setenv("AUTH_ARGON2_TIME_COST", "2")
    env.setenv("AUTH_ARGON2_MEMORY_KIB", "19456")
    assert load_settings(AuthSettings).argon2_memory_kib == 19456


# -- MFA -----------------------------------------------------------------------------------
def test_totp_window_and_replay() -> None:
    secret = mfa.new_totp_secret()
    now = time.time()
    step = pyotp.TOTP(secret).timecode(now)
    code = mfa.current_totp(secret, now=now)
    assert mfa.match_totp(secret, code, last_used_step=0, now=now) == step
    assert mfa.match_totp(secret, code[:3] + " " + code[3:], last_used_step=0, now=now) == step
    # A code is never accepted twice...
    assert mfa.match_totp(secret, code, last_used_step=step, now=now) is None
    # ...one step of drift either way is tolerated, two are not.
    assert mfa.match_totp(secret, code, last_used_step=0, now=now + 30) == step
    assert mfa.match_totp(secret, code, last_used_step=0, now=now + 61) is None
    assert mfa.match_totp(secret, "12345", last_used_step=0, now=now) is None
    assert mfa.match_totp(secret, "abcdef", last_used_step=0, now=now) is None


def test_recovery_codes() -> None:
    codes = mfa.new_recovery_codes()
    assert len(set(codes)) == 10
    assert all(len(c) == 11 and c[5] == "-" for c in codes)
    assert mfa.normalize_recovery_code(" ABCDE-fghjk ") == "abcdefghjk"


def test_qr_code_is_a_png() -> None:
    png = mfa.qr_png(mfa.otpauth_uri(mfa.new_totp_secret(), "ada@example.com", "Aether"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 200


# -- secrets at rest -----------------------------------------------------------------------------
def test_secret_box() -> None:
    box = new_box("s3cret")
    sealed = box.encrypt("totp-secret", b"JBSWY3DPEHPK3PXP", b"user-1")
    assert b"JBSWY3DPEHPK3PXP" not in sealed
    assert box.decrypt("totp-secret", sealed, b"user-1") == b"JBSWY3DPEHPK3PXP"
    with pytest.raises(SecretBoxError):
        box.decrypt("totp-secret", sealed, b"user-2")  # bound to its row
    with pytest.raises(SecretBoxError):
        box.decrypt("signing-key", sealed, b"user-1")  # and to its purpose
    with pytest.raises(SecretBoxError):
        new_box("other").decrypt("totp-secret", sealed, b"user-1")
    assert box.keyed_hash("recovery-code", "abc") != new_box("other").keyed_hash(
        "recovery-code", "abc"
    )


# -- RBAC ----------------------------------------------------------------------------------
def test_permissions_from_plan_and_role() -> None:
    free = set(permissions_for(Plan.FREE, Role.USER))
    premium = set(permissions_for(Plan.PREMIUM, Role.USER))
    assert free < premium
    assert "ai:deep" in premium - free
    assert USERS_ADMIN not in set(permissions_for(Plan.ADMIN, Role.USER))
    assert USERS_ADMIN in set(permissions_for(Plan.FREE, Role.ADMIN))
    assert "discussion:moderate" in set(permissions_for(Plan.FREE, Role.MODERATOR))
    assert permissions_for(Plan.FREE, Role.USER) == sorted(free)


def test_protobuf_enums_round_trip() -> None:
    for plan in Plan:
        assert plan_from_pb(plan_to_pb(plan)) is plan
    assert plan_from_pb(auth_pb2.PLAN_UNSPECIFIED) is None
    assert role_from_pb(auth_pb2.ROLE_MODERATOR) is Role.MODERATOR
    assert role_from_pb(42) is None


def test_the_migration_carries_the_shared_outbox_ddl() -> None:
    sql = (importlib.resources.files("aether_auth") / "migrations" / "0001_init.sql").read_text()
    assert OUTBOX_DDL.strip() in sql


def test_the_dev_catalog_declares_every_topic() -> None:
    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    table = tomllib.loads(pyproject.read_text())["tool"]["aether"]
    assert table["topics"] == list(events.TOPICS)
    assert (table["http_port"], table["grpc_port"]) == (3001, 4001)
