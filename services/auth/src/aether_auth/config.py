"""The auth service's settings (env prefix `AUTH_`; the devstack's `AETHER_*` names also work).

Required values have no default: the database, Redis, Kafka, SMTP, the public base URL for
mailed links and the secret that encrypts private signing keys and TOTP secrets at rest.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import ClassVar, Literal, Self

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from aether_auth.passwords import DEFAULT_MEMORY_KIB, DEFAULT_TIME_COST, meets_owasp_minimum
from aether_common.settings import (
    PLACEHOLDER_VALUES,
    AetherSettings,
    Environment,
    is_placeholder,
)

_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _alias(own: str, platform: str) -> AliasChoices:
    return AliasChoices(own, platform)


class OAuthProviderSettings(BaseModel):
    """One OAuth 2.0 / OpenID Connect provider (authorization code + PKCE).

    Given as JSON in AUTH_OAUTH_PROVIDERS, e.g.
    `[{"name": "google", "issuer": "https://accounts.google.com", "client_id": "...",
       "client_secret": "...", "redirect_uris": ["https://app.example/oauth/google"]}]`.
    """

    model_config = {"frozen": True}

    name: str
    display_name: str = ""
    issuer: str
    # Defaults to `<issuer>/.well-known/openid-configuration`.
    discovery_url: str | None = None
    client_id: str
    client_secret: SecretStr
    # The only redirect URIs StartOAuth accepts (exact match).
    redirect_uris: list[str] = Field(min_length=1)
    scopes: list[str] = ["openid", "email", "profile"]
    token_auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"  # noqa: S105 (a method name)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _PROVIDER_NAME.fullmatch(value):
            raise ValueError("provider name must be lowercase [a-z0-9_-], at most 32 characters")
        return value

    @property
    def discovery_document_url(self) -> str:
        return self.discovery_url or self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    @property
    def label(self) -> str:
        return self.display_name or self.name.capitalize()


def dev_service_secret(client_id: str) -> str:
    """The secret the devstack and the Helm dev values give client `client_id`."""
    return f"dev-only-{client_id}-service-secret"


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ServiceClientSettings(BaseModel):
    """One service that may get service tokens (OAuth 2.0 client credentials), keyed by its
    client id in AUTH_SERVICE_CLIENTS, e.g.
    `{"alerts": {"secret_sha256": "<hex>", "permissions": ["charts:read"]}}`.

    Only the SHA-256 of the secret is configured: the secrets are long random strings (not
    passwords), so a plain hash is enough and keeps checking one cheap.
    """

    model_config = {"frozen": True}

    secret_sha256: str
    permissions: list[str] = []

    @field_validator("secret_sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256_HEX.fullmatch(value):
            raise ValueError("secret_sha256 must be 64 hex digits (sha256sum of the secret)")
        return value

    def has_placeholder_secret(self, client_id: str) -> bool:
        """Whether the hash is that of a placeholder we know (the dev default included)."""
        known = {*PLACEHOLDER_VALUES, dev_service_secret(client_id), f"dev-only-{client_id}"}
        return self.secret_sha256 in {secret_sha256(value) for value in known}


class AuthSettings(AetherSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_")

    service_name: ClassVar[str] = "auth"

    database_url: str = Field(validation_alias=_alias("AUTH_DATABASE_URL", "AETHER_DATABASE_URL"))
    # Derives the AES-GCM keys for private signing keys and TOTP secrets, and the pepper of
    # recovery-code hashes. Losing it invalidates every signing key and MFA enrolment.
    key_encryption_secret: SecretStr = Field(
        validation_alias=AliasChoices("AUTH_KEY_ENCRYPTION_SECRET")
    )
    # Kafka topics are `<topic_prefix><event type>`: empty in production; tests isolate with it.
    topic_prefix: str = ""

    # -- tokens --------------------------------------------------------------------------------
    issuer: str = "aether-auth"  # `iss` of access tokens
    audience: str = "aether"  # `aud` of access tokens
    access_token_ttl_s: int = Field(default=15 * 60, ge=30, le=24 * 3600)
    refresh_token_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    # Services' client credentials (IssueServiceToken) and their tokens' short lifetime.
    service_clients: dict[str, ServiceClientSettings] = {}
    service_token_ttl_s: int = Field(default=300, ge=30, le=3600)
    # Services whose calls may name the user they act for (`x-aether-on-behalf-of`,
    # aether_common.delegation), on ExportMyData only (callers.py): the worker's gdpr.export.
    delegating_services: list[str] = Field(default_factory=lambda: ["worker"])
    # Failed IssueServiceToken calls per client id within the window before it is refused for
    # the window (guessing a secret; low enough to stop that, high enough for a restart loop).
    service_failure_limit: int = Field(default=10, ge=1)
    service_failure_window_s: int = Field(default=60, ge=1)
    # A new signing key every N seconds (0: only by `python -m aether_auth.admin rotate-keys`).
    key_rotation_interval_s: int = Field(default=30 * 24 * 3600, ge=0)

    redis_url: str = Field(validation_alias=_alias("AUTH_REDIS_URL", "AETHER_REDIS_URL"))
    kafka_bootstrap: str = Field(
        validation_alias=_alias("AUTH_KAFKA_BOOTSTRAP", "AETHER_KAFKA_BOOTSTRAP")
    )
    # Every Redis key the service writes starts with this (tests give each test its own).
    redis_prefix: str = "auth:"

    # -- passwords (argon2id, one lane) ---------------------------------------------------------
    # OWASP's m=7 MiB, t=5 configuration (Keycloak's default too); weaker than every OWASP
    # configuration is refused outside dev and test (passwords.OWASP_ARGON2ID).
    argon2_time_cost: int = Field(default=DEFAULT_TIME_COST, ge=1, le=64)
    argon2_memory_kib: int = Field(default=DEFAULT_MEMORY_KIB, ge=1024, le=4 * 1024 * 1024)
    # Threads that hash (argon2 releases the GIL): one per core by default.
    password_hash_workers: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=1)
    password_min_length: int = Field(default=10, ge=8, le=64)

    # -- throttling and lockout ----------------------------------------------------------------
    lockout_threshold: int = Field(default=5, ge=1)  # failures per account within the window
    lockout_window_s: int = Field(default=15 * 60, ge=1)
    lockout_duration_s: int = Field(default=15 * 60, ge=1)
    ip_failure_limit: int = Field(default=50, ge=1)  # failures per client IP within the window
    ip_window_s: int = Field(default=15 * 60, ge=1)
    # One mail (verification or reset) per address per this many seconds.
    mail_cooldown_s: int = Field(default=60, ge=0)

    # -- MFA -----------------------------------------------------------------------------------
    mfa_issuer_name: str = "Aether"  # shown by authenticator apps
    mfa_challenge_ttl_s: int = Field(default=5 * 60, ge=30)
    mfa_challenge_attempts: int = Field(default=5, ge=1)

    # -- mail ----------------------------------------------------------------------------------
    smtp_host: str = Field(validation_alias=_alias("AUTH_SMTP_HOST", "AETHER_SMTP_HOST"))
    smtp_port: int = Field(validation_alias=_alias("AUTH_SMTP_PORT", "AETHER_SMTP_PORT"))
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_timeout_s: float = 10.0
    mail_from: str = "Aether <no-reply@aether.local>"
    # Mailed links: `<public_base_url><path>?token=...` (the web app's pages).
    public_base_url: str
    verify_email_path: str = "/verify-email"
    reset_password_path: str = "/reset-password"  # noqa: S105 (a path)
    verify_email_ttl_s: int = Field(default=48 * 3600, ge=60)
    reset_password_ttl_s: int = Field(default=3600, ge=60)

    # -- OAuth / OIDC login ---------------------------------------------------------------------
    oauth_providers: list[OAuthProviderSettings] = []
    oauth_state_ttl_s: int = Field(default=10 * 60, ge=30)
    oauth_http_timeout_s: float = 10.0

    # -- housekeeping ----------------------------------------------------------------------------
    housekeeping_interval_s: float = Field(default=60.0, gt=0)
    login_history_retention_days: int = Field(default=90, ge=1)

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _refuse_weak_password_hashing(self) -> Self:
        weak = not meets_owasp_minimum(self.argon2_time_cost, self.argon2_memory_kib)
        if weak and self.environment not in (Environment.DEV, Environment.TEST):
            raise ValueError(
                f"AUTH_ARGON2_TIME_COST={self.argon2_time_cost} with AUTH_ARGON2_MEMORY_KIB="
                f"{self.argon2_memory_kib} is weaker than every OWASP argon2id configuration "
                "(e.g. t=5 with 7168 KiB, t=2 with 19456 KiB); refused outside dev and test"
            )
        return self

    @model_validator(mode="after")
    def _check_providers(self) -> Self:
        names = [p.name for p in self.oauth_providers]
        if len(names) != len(set(names)):
            raise ValueError("AUTH_OAUTH_PROVIDERS: provider names must be unique")
        if self.environment is not Environment.DEV:
            # The base class checks top-level secrets only; provider secrets are nested.
            bad = [
                p.name
                for p in self.oauth_providers
                if is_placeholder(p.client_secret.get_secret_value())
            ]
            if bad:
                raise ValueError(
                    "AUTH_OAUTH_PROVIDERS: placeholder client_secret refused outside dev: "
                    + ", ".join(bad)
                )
        return self

    @model_validator(mode="after")
    def _check_service_clients(self) -> Self:
        bad_ids = [c for c in self.service_clients if not _PROVIDER_NAME.fullmatch(c)]
        if bad_ids:
            raise ValueError(
                "AUTH_SERVICE_CLIENTS: client ids must be lowercase [a-z0-9_-], at most 32 "
                "characters: " + ", ".join(repr(c) for c in bad_ids)
            )
        if self.environment is not Environment.DEV:
            # Only hashes are configured: compare them with the hashes of known placeholders.
            bad = [c for c, s in self.service_clients.items() if s.has_placeholder_secret(c)]
            if bad:
                raise ValueError(
                    "AUTH_SERVICE_CLIENTS: placeholder secret refused outside dev: "
                    + ", ".join(bad)
                )
        return self

    def provider(self, name: str) -> OAuthProviderSettings | None:
        return next((p for p in self.oauth_providers if p.name == name), None)
