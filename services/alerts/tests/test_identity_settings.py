"""alerts' own identity settings: ALERTS_AUTH_CLIENT_ID / ALERTS_AUTH_CLIENT_SECRET, the
`<SERVICE>_AUTH_CLIENT_*` convention of aether_common.service_tokens."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aether_alerts.config import AlertsSettings

REQUIRED = {
    "database_url": "postgresql://alerts@db/alerts",
    "kafka_bootstrap": "kafka:9092",
    "auth_grpc_target": "auth:4001",
    "charts_grpc_target": "charts:4005",
    "redis_url": "redis://redis:6379/3",
    "smtp_host": "smtp",
    "smtp_port": 587,
    # A real key: the placeholder is refused outside dev, which is not what these tests test.
    "webhook_secret_key": "k" * 44,
}


def test_client_id_defaults_to_alerts_and_the_secret_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALERTS_AUTH_CLIENT_SECRET", "s3cr3t-" + "x" * 32)
    settings = AlertsSettings.model_validate({"environment": "prod", **REQUIRED})
    assert settings.auth_client_id == "alerts"
    assert settings.auth_client_secret is not None
    assert settings.auth_client_secret.get_secret_value().startswith("s3cr3t-")


def test_the_dev_secret_is_refused_outside_dev() -> None:
    dev = {**REQUIRED, "auth_client_secret": "dev-only-alerts-service-secret"}
    assert AlertsSettings.model_validate({"environment": "dev", **dev}).auth_client_secret
    with pytest.raises(ValidationError, match="ALERTS_AUTH_CLIENT_SECRET"):
        AlertsSettings.model_validate({"environment": "prod", **dev})
