"""Settings fail at start with the env var's name, and refuse placeholder secrets outside dev."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from aether_common.settings import AetherSettings, Environment, SettingsError, load_settings


class ExampleSettings(AetherSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")

    database_url: str
    jwt_secret: SecretStr
    pool_size: int = 10


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AETHER_ENV", "EXAMPLE_DATABASE_URL", "EXAMPLE_JWT_SECRET", "EXAMPLE_POOL_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_missing_required_setting_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_ENV", "dev")
    monkeypatch.setenv("EXAMPLE_JWT_SECRET", "dev-only-secret")
    with pytest.raises(SettingsError, match="missing required setting EXAMPLE_DATABASE_URL"):
        load_settings(ExampleSettings)


def test_missing_environment_is_required_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("EXAMPLE_JWT_SECRET", "a-real-looking-secret-value")
    with pytest.raises(SettingsError, match="missing required setting AETHER_ENV"):
        load_settings(ExampleSettings)


def test_invalid_value_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_ENV", "dev")
    monkeypatch.setenv("EXAMPLE_DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("EXAMPLE_JWT_SECRET", "s")
    monkeypatch.setenv("EXAMPLE_POOL_SIZE", "many")
    with pytest.raises(SettingsError, match="invalid setting EXAMPLE_POOL_SIZE"):
        load_settings(ExampleSettings)


def test_reads_prefixed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_ENV", "staging")
    monkeypatch.setenv("EXAMPLE_DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("EXAMPLE_JWT_SECRET", "kq8Zr1pW-real-secret")
    monkeypatch.setenv("EXAMPLE_POOL_SIZE", "3")
    settings = load_settings(ExampleSettings)
    assert settings.environment is Environment.STAGING
    assert (settings.database_url, settings.pool_size) == ("postgresql://db/x", 3)
    assert "kq8Zr1pW" not in repr(settings)  # secrets never show in logs


@pytest.mark.parametrize("value", ["dev-only-jwt", "change-me", "changeme", "secret", ""])
def test_placeholder_secret_refused_outside_dev(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AETHER_ENV", "prod")
    monkeypatch.setenv("EXAMPLE_DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("EXAMPLE_JWT_SECRET", value)
    with pytest.raises(SettingsError, match=r"placeholder secret.*EXAMPLE_JWT_SECRET"):
        load_settings(ExampleSettings)


def test_placeholder_secret_allowed_in_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_ENV", "dev")
    monkeypatch.setenv("EXAMPLE_DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("EXAMPLE_JWT_SECRET", "dev-only-jwt")
    assert load_settings(ExampleSettings).jwt_secret.get_secret_value() == "dev-only-jwt"


def test_overrides_by_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        ExampleSettings,
        environment="test",
        database_url="postgresql://db/y",
        jwt_secret="a-long-random-secret-value",
    )
    assert settings.environment is Environment.TEST
