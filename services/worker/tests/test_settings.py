"""The worker's settings: its own identity (WORKER_AUTH_CLIENT_ID / _SECRET, the
`<SERVICE>_AUTH_CLIENT_*` convention), the dev secret refused outside dev, and the quota rows."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aether_worker.config import WorkerSettings

REQUIRED = {
    "database_url": "postgresql://worker@db/worker",
    "kafka_bootstrap": "kafka:9092",
    "auth_grpc_target": "auth:4001",
    "charts_grpc_target": "charts:4005",
    "ai_grpc_target": "ai:4007",
    "chat_grpc_target": "chat:4003",
    "alerts_grpc_target": "alerts:4006",
    "memory_grpc_target": "memory:4008",
    "smtp_host": "smtp",
    "smtp_port": 25,
}


def test_client_id_defaults_to_worker_and_the_secret_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKER_AUTH_CLIENT_SECRET", "s3cr3t-" + "x" * 32)
    settings = WorkerSettings.model_validate({"environment": "prod", **REQUIRED})
    assert settings.auth_client_id == "worker"
    assert settings.auth_client_secret is not None
    assert settings.auth_client_secret.get_secret_value().startswith("s3cr3t-")
    assert settings.s3_bucket == "aether-worker"


def test_the_dev_secret_is_refused_outside_dev() -> None:
    dev = {**REQUIRED, "auth_client_secret": "dev-only-worker-service-secret"}
    assert WorkerSettings.model_validate({"environment": "dev", **dev}).auth_client_secret
    with pytest.raises(ValidationError, match="WORKER_AUTH_CLIENT_SECRET"):
        WorkerSettings.model_validate({"environment": "prod", **dev})


def test_quotas_by_plan_operators_get_the_admin_row() -> None:
    s = WorkerSettings.model_validate({"environment": "dev", **REQUIRED})
    assert [s.concurrent_quota(p, operator=False) for p in (None, "free", "premium")] == [3, 3, 20]
    assert s.concurrent_quota("free", operator=True) == 200
    assert [s.sweep_quota(p, operator=False) for p in ("free", "premium")] == [25, 500]
    assert s.sweep_quota(None, operator=True) == 10_000


def test_a_backoff_base_above_its_cap_is_refused() -> None:
    with pytest.raises(ValidationError, match="WORKER_RETRY_BACKOFF_S"):
        WorkerSettings.model_validate(
            {"environment": "dev", **REQUIRED, "retry_backoff_s": 10, "retry_max_backoff_s": 1}
        )
