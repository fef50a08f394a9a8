"""Settings: one pydantic-settings class per service, each with its own env prefix.

Required values have no default, so a missing one stops the process at start with the env var's
name. Secrets are `SecretStr`; a placeholder secret (the dev defaults) is refused unless
`AETHER_ENV=dev`, so a forgotten production secret cannot ship.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Self, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEV = "dev"
    TEST = "test"
    STAGING = "staging"
    PROD = "prod"


# Values we ship as dev defaults or that people type while trying things out.
PLACEHOLDER_PREFIXES = ("dev-only-", "change-me", "changeme", "placeholder")
PLACEHOLDER_VALUES = frozenset({"", "secret", "password", "test", "admin", "example"})


def is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return lowered in PLACEHOLDER_VALUES or lowered.startswith(PLACEHOLDER_PREFIXES)


class SettingsError(RuntimeError):
    """Raised at start when settings are missing or unsafe; the message names each env var."""


class AetherSettings(BaseSettings):
    """Base of every service's settings.

    Subclasses set `model_config = SettingsConfigDict(env_prefix="AUTH_")` (their own prefix)
    and add their fields. `environment`, logging, `otlp_endpoint` and the listen addresses are
    platform-wide, so they are read from `AETHER_*` (and OTEL_*) names whatever the prefix.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    service_name: ClassVar[str] = "aether"

    environment: Environment = Field(validation_alias=AliasChoices("AETHER_ENV"))
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("AETHER_LOG_LEVEL"))
    log_json: bool = Field(default=True, validation_alias=AliasChoices("AETHER_LOG_JSON"))
    otlp_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    # Where this process listens; `aether-dev up` and the Helm chart set these per service.
    http_host: str = Field(default="0.0.0.0", validation_alias=AliasChoices("AETHER_HTTP_HOST"))
    http_port: int = Field(
        default=8000, ge=1, le=65535, validation_alias=AliasChoices("AETHER_HTTP_PORT")
    )
    grpc_port: int = Field(
        default=50051, ge=1, le=65535, validation_alias=AliasChoices("AETHER_GRPC_PORT")
    )

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Self:
        if self.environment is Environment.DEV:
            return self
        bad = [
            self.env_var_name(name)
            for name, value in self
            if isinstance(value, SecretStr) and is_placeholder(value.get_secret_value())
        ]
        if bad:
            raise ValueError(
                f"placeholder secret(s) refused outside dev (AETHER_ENV={self.environment}): "
                + ", ".join(bad)
            )
        return self

    @classmethod
    def env_var_name(cls, field_name: str) -> str:
        field = cls.model_fields[field_name]
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        if isinstance(alias, str):
            return alias
        return f"{cls.model_config.get('env_prefix', '')}{field_name}".upper()


S = TypeVar("S", bound=AetherSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment, turning pydantic's report into one clear message."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            if loc and loc[0] in cls.model_fields:
                where = cls.env_var_name(loc[0])
            else:
                where = ".".join(loc) or cls.__name__
            if error["type"] == "missing":
                problems.append(f"missing required setting {where}")
            else:
                problems.append(
                    f"invalid setting {where}: {error['msg']}".replace("Value error, ", "")
                )
        raise SettingsError(f"{cls.__name__}: " + "; ".join(problems)) from None
