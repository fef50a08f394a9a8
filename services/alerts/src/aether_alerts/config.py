"""The alerts service's settings (env prefix `ALERTS_`; the devstack's `AETHER_*` names also work).

Required values have no default: PostgreSQL, Kafka, and the gRPC addresses of auth (the JWKS that
verifies callers' tokens) and charts (whether a symbol exists). Delivery (delivery.py) needs
Redis (in-app frames), SMTP (email) and the key that encrypts webhook secrets.
"""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from aether_common.settings import AetherSettings


def _alias(own: str, platform: str) -> AliasChoices:
    return AliasChoices(own, platform)


class AlertsSettings(AetherSettings):
    model_config = SettingsConfigDict(env_prefix="ALERTS_")

    service_name: ClassVar[str] = "alerts"

    # -- datastores and events ---------------------------------------------------------------------
    database_url: str = Field(validation_alias=_alias("ALERTS_DATABASE_URL", "AETHER_DATABASE_URL"))
    database_pool_size: int = Field(default=10, ge=1, le=200)
    kafka_bootstrap: str = Field(
        validation_alias=_alias("ALERTS_KAFKA_BOOTSTRAP", "AETHER_KAFKA_BOOTSTRAP")
    )
    # Kafka topics (and the consumer group) are `<topic_prefix><name>`: empty in production.
    topic_prefix: str = ""
    consumer_group: str = "alerts"
    # The engine's and delivery's fetch wait (aether_common ConsumerOptions): Kafka answers as
    # soon as records arrive; the local broker (tansu) holds each fetch this long, which then
    # is most of a tick's way to the user's socket (bench/alerts_latency.py).
    fetch_max_wait_ms: int = Field(default=500, ge=1, le=10_000)
    outbox_poll_s: float = Field(default=0.05, gt=0)

    # -- who is calling (tokens verified with auth's JWKS) ------------------------------------
    auth_grpc_target: str = Field(
        validation_alias=_alias("ALERTS_AUTH_GRPC_TARGET", "AETHER_AUTH_GRPC_TARGET")
    )
    auth_timeout_s: float = Field(default=5.0, gt=0)
    jwt_issuer: str = "aether-auth"
    jwt_audience: str = "aether"
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    jwks_refetch_interval_s: float = Field(default=10.0, ge=0)
    # Services whose calls may name the user they act for (`x-aether-on-behalf-of`,
    # aether_common.delegation): the worker runs `gdpr.export` jobs for users that way.
    delegating_services: list[str] = Field(default_factory=lambda: ["worker"])

    # -- its own identity: service tokens from auth (aether_common.service_tokens) --------------
    # ALERTS_AUTH_CLIENT_ID / ALERTS_AUTH_CLIENT_SECRET, the `<SERVICE>_AUTH_CLIENT_*` convention;
    # auth lists the id with the secret's sha256 in AUTH_SERVICE_CLIENTS. Unset: alerts has no
    # identity of its own, so only calls made for a user (with the user's token) can succeed.
    auth_client_id: str = "alerts"
    auth_client_secret: SecretStr | None = None

    # -- charts: a rule's symbol must be one charts knows (GetQuote) -----------------------------
    charts_grpc_target: str = Field(
        validation_alias=_alias("ALERTS_CHARTS_GRPC_TARGET", "AETHER_CHARTS_GRPC_TARGET")
    )
    charts_timeout_s: float = Field(default=5.0, gt=0)

    # -- quotas: active rules per plan (docs/alerts.md "Quotas"); the role wins over the plan ---
    quota_free: int = Field(default=20, ge=0)
    quota_premium: int = Field(default=200, ge=0)
    quota_admin: int = Field(default=1000, ge=0)
    admin_role: str = "admin"

    # -- expiry (expiry.py): how often rules past expires_at turn expired, how many per batch
    expiry_interval_s: float = Field(default=30.0, gt=0)
    expiry_batch: int = Field(default=500, ge=1, le=100_000)

    # -- limits (alerts.proto states them) -------------------------------------------------------
    # every_time rules: the least cool-down a user may set (firing floods are a cost).
    min_cooldown_s: int = Field(default=60, ge=1)
    default_limit: int = Field(default=50, ge=1)
    max_limit: int = Field(default=200, ge=1, le=1000)

    # -- the GDPR export (ExportMyData): refused, never cut short, past these ---------------------
    # Rows read per section (rules, firings, notifications, deliveries, webhooks).
    export_max_records: int = Field(default=200_000, ge=1)
    # The JSON document's size (the worker's channel must accept as much).
    export_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    # -- delivery (delivery.py) -----------------------------------------------------------------
    redis_url: str = Field(validation_alias=_alias("ALERTS_REDIS_URL", "AETHER_REDIS_URL"))
    redis_timeout_s: float = Field(default=2.0, gt=0)
    # In-app frames are PUBLISHed on `<notify_prefix>user:<user id>` (the gateway subscribes).
    notify_prefix: str = "alerts:notify:"
    smtp_host: str = Field(validation_alias=_alias("ALERTS_SMTP_HOST", "AETHER_SMTP_HOST"))
    smtp_port: int = Field(validation_alias=_alias("ALERTS_SMTP_PORT", "AETHER_SMTP_PORT"))
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    mail_from: str = "Aether alerts <alerts@aether.local>"
    # Links in mails: `<public_url><inbox_path>`.
    public_url: str = "http://localhost:8080"
    inbox_path: str = "/notifications"
    # Encrypts webhook secrets at rest (AES-256-GCM, HKDF-derived); a placeholder is refused
    # outside dev. Changing it makes every stored secret unreadable: rotate endpoints after.
    webhook_secret_key: SecretStr = SecretStr("dev-only-alerts-webhook-key")
    # Webhook endpoints per plan (the role wins over the plan).
    webhooks_free: int = Field(default=2, ge=0)
    webhooks_premium: int = Field(default=10, ge=0)
    webhooks_admin: int = Field(default=50, ge=0)
    # After a rotation the old secret also signs for this long (0: it stops at once).
    webhook_rotation_grace_s: int = Field(default=24 * 3600, ge=0)
    # Attempts per delivery (the first included); backoff base * 2^(attempt-1), capped, with
    # full jitter.
    delivery_max_attempts: int = Field(default=6, ge=1, le=50)
    delivery_backoff_s: float = Field(default=30.0, gt=0)
    delivery_max_backoff_s: float = Field(default=3600.0, gt=0)
    # The dispatcher wakes on each new delivery (LISTEN) and at least this often (retries).
    delivery_poll_s: float = Field(default=1.0, gt=0)
    delivery_batch: int = Field(default=100, ge=1, le=10_000)
    # A claimed delivery is retried after this long if its sender died mid-send.
    delivery_lease_s: float = Field(default=120.0, gt=0)
    delivery_concurrency: int = Field(default=20, ge=1, le=1000)
    webhook_connect_timeout_s: float = Field(default=3.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.default_limit > self.max_limit:
            raise ValueError("ALERTS_DEFAULT_LIMIT must not exceed ALERTS_MAX_LIMIT")
        return self

    def quota(self, plan: str | None, *, admin: bool) -> int:
        if admin:
            return self.quota_admin
        return self.quota_premium if plan == "premium" else self.quota_free

    def webhook_quota(self, plan: str | None, *, admin: bool) -> int:
        if admin:
            return self.webhooks_admin
        return self.webhooks_premium if plan == "premium" else self.webhooks_free
