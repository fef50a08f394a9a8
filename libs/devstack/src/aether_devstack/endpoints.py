"""Where each backing server answers. One object, passed around and exported as env vars."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

# Env var per field: the same names drive the external backend, `make dev` and services.
ENV_NAMES = {
    "postgres_dsn": "AETHER_POSTGRES_DSN",
    "redis_url": "AETHER_REDIS_URL",
    "kafka_bootstrap": "AETHER_KAFKA_BOOTSTRAP",
    "mongo_url": "AETHER_MONGO_URL",
    "elasticsearch_url": "AETHER_ELASTICSEARCH_URL",
    "s3_endpoint": "AETHER_S3_ENDPOINT",
    "s3_access_key": "AETHER_S3_ACCESS_KEY",
    "s3_secret_key": "AETHER_S3_SECRET_KEY",
    "smtp_host": "AETHER_SMTP_HOST",
    "smtp_port": "AETHER_SMTP_PORT",
    "maildir": "AETHER_MAILDIR",
    "qdrant_location": "AETHER_QDRANT_LOCATION",
    "llm_base_url": "AETHER_LLM_BASE_URL",
}


_REQUIRED = (
    "postgres_dsn",
    "redis_url",
    "kafka_bootstrap",
    "mongo_url",
    "elasticsearch_url",
    "s3_endpoint",
    "smtp_host",
    "smtp_port",
)


@dataclass(frozen=True)
class Endpoints:
    """Addresses of the backing servers. `postgres_dsn` is an admin DSN (may create databases)."""

    postgres_dsn: str
    redis_url: str
    kafka_bootstrap: str
    mongo_url: str
    elasticsearch_url: str
    s3_endpoint: str
    smtp_host: str
    smtp_port: int
    # moto accepts any credentials; MinIO and AWS need real ones.
    s3_access_key: str = "dev-only-access-key"
    s3_secret_key: str = "dev-only-secret-key"  # noqa: S105 (local-only placeholder)
    # Where the local SMTP server stores mail (Maildir); empty when mail cannot be read back.
    maildir: str = ""
    # The vector index: a Qdrant server URL, or a directory / ":memory:" (Qdrant Edge embedded).
    qdrant_location: str = ":memory:"
    # An OpenAI-compatible API (`.../v1`): the local llama.cpp server; empty when there is none.
    llm_base_url: str = ""

    def as_env(self) -> dict[str, str]:
        return {ENV_NAMES[k]: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Endpoints:
        env = os.environ if environ is None else environ
        missing = [
            ENV_NAMES[f.name]
            for f in fields(cls)
            if f.name in _REQUIRED and not env.get(ENV_NAMES[f.name])
        ]
        if missing:
            raise RuntimeError("external backend needs these env vars: " + ", ".join(missing))
        values: dict[str, str | int] = {
            f.name: env[ENV_NAMES[f.name]] for f in fields(cls) if env.get(ENV_NAMES[f.name])
        }
        values["smtp_port"] = int(values["smtp_port"])
        return cls(**values)  # type: ignore[arg-type]
