"""The worker service's settings (env prefix `WORKER_`; the devstack's `AETHER_*` names also work).

Required values have no default: PostgreSQL, Kafka and auth's gRPC address (the JWKS that
verifies callers' tokens). The S3 server and keys are the platform's `AETHER_S3_*`
(aether_common.s3); the bucket of job artifacts is `WORKER_S3_BUCKET` (aether-worker).
Numbers documented in docs/worker.md (quotas, retries, leases, retention) are these defaults.
"""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from aether_common.s3 import S3Settings


def _alias(own: str, platform: str) -> AliasChoices:
    return AliasChoices(own, platform)


class WorkerSettings(S3Settings):
    model_config = SettingsConfigDict(env_prefix="WORKER_")

    service_name: ClassVar[str] = "worker"

    # -- datastores and Kafka --------------------------------------------------------------------
    database_url: str = Field(validation_alias=_alias("WORKER_DATABASE_URL", "AETHER_DATABASE_URL"))
    database_pool_size: int = Field(default=10, ge=2, le=200)
    kafka_bootstrap: str = Field(
        validation_alias=_alias("WORKER_KAFKA_BOOTSTRAP", "AETHER_KAFKA_BOOTSTRAP")
    )
    # Kafka topics (and consumer groups) are `<topic_prefix><name>`: empty in production.
    topic_prefix: str = ""
    consumer_group: str = "worker"
    outbox_poll_s: float = Field(default=0.05, gt=0)
    # Work topics' partitions: the most consumers of one type that can share its work.
    work_partitions: int = Field(default=6, ge=1, le=1000)
    # How long a fetch waits on an idle work topic (a real broker answers at once when work
    # arrives; the local one always waits this long, so tests set it low).
    work_fetch_max_wait_ms: int = Field(default=500, ge=1, le=10_000)
    # Off: this replica serves the API only and runs no jobs (the scheduler still runs).
    run_jobs: bool = True

    # -- artifacts ---------------------------------------------------------------------------------
    s3_bucket: str = "aether-worker"
    artifact_url_expiry_s: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    # The largest result kept inline (JSON bytes); bigger outputs belong in artifacts.
    max_result_bytes: int = Field(default=64 * 1024, ge=256, le=1024 * 1024)

    # -- who is calling (tokens verified with auth's JWKS) ------------------------------------
    auth_grpc_target: str = Field(
        validation_alias=_alias("WORKER_AUTH_GRPC_TARGET", "AETHER_AUTH_GRPC_TARGET")
    )
    auth_timeout_s: float = Field(default=5.0, gt=0)
    # charts: the bars a backtest runs on and the charts chart.render draws, read as the worker.
    charts_grpc_target: str = Field(
        validation_alias=_alias("WORKER_CHARTS_GRPC_TARGET", "AETHER_CHARTS_GRPC_TARGET")
    )
    # One call; a page of 10,000 candles included.
    charts_timeout_s: float = Field(default=30.0, gt=0)
    # Processes running backtests (CPU-bound: one per concurrent backtest).
    compute_workers: int = Field(default=2, ge=1, le=64)
    # ai: `ai.generate` jobs call its ChatWhole as the worker acting for the job's owner. One
    # call's deadline; a whole answer's (queue wait plus generation, a minute or more on CPU).
    ai_grpc_target: str = Field(
        validation_alias=_alias("WORKER_AI_GRPC_TARGET", "AETHER_AI_GRPC_TARGET")
    )
    ai_timeout_s: float = Field(default=10.0, gt=0)
    ai_answer_timeout_s: float = Field(default=240.0, gt=0)
    # chat: `retention.archive` jobs (docs/archives.md), submitted once a day after this hour.
    chat_grpc_target: str = Field(
        validation_alias=_alias("WORKER_CHAT_GRPC_TARGET", "AETHER_CHAT_GRPC_TARGET")
    )
    archive_hour_utc: int = Field(default=2, ge=0, le=23)
    archive_check_interval_s: float = Field(default=600.0, gt=0)
    # gdpr.export (docs/gdpr-export.md): every service's ExportMyData, called as the worker
    # acting for the user (auth, chat and ai above; alerts and memory here), one call's
    # deadline; the zip's link is mailed, on the public gateway's address.
    alerts_grpc_target: str = Field(
        validation_alias=_alias("WORKER_ALERTS_GRPC_TARGET", "AETHER_ALERTS_GRPC_TARGET")
    )
    memory_grpc_target: str = Field(
        validation_alias=_alias("WORKER_MEMORY_GRPC_TARGET", "AETHER_MEMORY_GRPC_TARGET")
    )
    export_timeout_s: float = Field(default=120.0, gt=0)
    public_url: str = "http://127.0.0.1:8080"
    smtp_host: str = Field(validation_alias=_alias("WORKER_SMTP_HOST", "AETHER_SMTP_HOST"))
    smtp_port: int = Field(validation_alias=_alias("WORKER_SMTP_PORT", "AETHER_SMTP_PORT"))
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    mail_from: str = "Aether <no-reply@aether.local>"
    jwt_issuer: str = "aether-auth"
    jwt_audience: str = "aether"
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    jwks_refetch_interval_s: float = Field(default=10.0, ge=0)
    # Operators: this role, or any service token.
    admin_role: str = "admin"

    # -- its own identity: service tokens from auth (aether_common.service_tokens) --------------
    # WORKER_AUTH_CLIENT_ID / WORKER_AUTH_CLIENT_SECRET; auth lists the id with the secret's
    # sha256 in AUTH_SERVICE_CLIENTS. Unset: the worker has no identity of its own (handlers
    # that call other services as the worker cannot run).
    auth_client_id: str = "worker"
    auth_client_secret: SecretStr | None = None

    # -- running jobs (docs/worker.md "Leases and fencing", "Retries and the DLQ") -------------
    # A claimed attempt's lease; renewed every lease_s / 3 while it runs. A worker killed mid-job
    # has its job taken up again (a new attempt) once the lease has run out.
    lease_s: float = Field(default=30.0, ge=0.5, le=3600)
    # Retry n waits a random time in [0, min(retry_max_backoff_s, retry_backoff_s * 2^(n-1))]
    # (exponential backoff with full jitter).
    retry_backoff_s: float = Field(default=5.0, ge=0)
    retry_max_backoff_s: float = Field(default=600.0, ge=0)
    # The scheduler: expired leases, due retries, lost work messages (a periodic sweep).
    scheduler_interval_s: float = Field(default=1.0, gt=0)
    scheduler_batch: int = Field(default=500, ge=1, le=100_000)
    # A queued job with no claim for this long has its work message sent again (a lost one).
    requeue_after_s: float = Field(default=300.0, gt=0)
    # SIGTERM: running attempts get this long to finish, then go back to the queue uncounted.
    stop_grace_s: float = Field(default=20.0, ge=0, le=3600)
    # WatchJob re-reads the job at least this often (a missed notification costs no more).
    watch_poll_s: float = Field(default=5.0, gt=0)

    # -- quotas per plan (docs/worker.md "Quotas"); the admin role and services: the admin row --
    concurrent_free: int = Field(default=3, ge=0)
    concurrent_premium: int = Field(default=20, ge=0)
    concurrent_admin: int = Field(default=200, ge=0)
    # Runs one job may ask for (a backtest sweep's size: JobType.runs).
    sweep_free: int = Field(default=25, ge=1)
    sweep_premium: int = Field(default=500, ge=1)
    sweep_admin: int = Field(default=10_000, ge=1)

    # -- retention (retention.py) ----------------------------------------------------------------
    # Finished jobs, their results and artifacts are kept this long, then purged.
    retention_days: float = Field(default=30.0, gt=0)
    purge_interval_s: float = Field(default=3600.0, gt=0)
    purge_batch: int = Field(default=200, ge=1, le=10_000)

    # -- paging (worker.proto) -------------------------------------------------------------------
    default_limit: int = Field(default=50, ge=1)
    max_limit: int = Field(default=200, ge=1, le=1000)

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.default_limit > self.max_limit:
            raise ValueError("WORKER_DEFAULT_LIMIT must not exceed WORKER_MAX_LIMIT")
        if self.retry_backoff_s > self.retry_max_backoff_s:
            raise ValueError("WORKER_RETRY_BACKOFF_S must not exceed WORKER_RETRY_MAX_BACKOFF_S")
        return self

    def concurrent_quota(self, plan: str | None, *, operator: bool) -> int:
        if operator:
            return self.concurrent_admin
        return self.concurrent_premium if plan == "premium" else self.concurrent_free

    def sweep_quota(self, plan: str | None, *, operator: bool) -> int:
        if operator:
            return self.sweep_admin
        return self.sweep_premium if plan == "premium" else self.sweep_free
