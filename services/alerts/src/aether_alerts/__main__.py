"""`python -m aether_alerts`: HTTP (health, readiness, metrics) + gRPC + the outbox relay + the
account-deletion consumer."""

from __future__ import annotations

import sys

from aether_alerts.app import AlertsApp
from aether_alerts.config import AlertsSettings
from aether_common.runner import run_service
from aether_common.settings import SettingsError, load_settings


def main() -> None:
    try:
        settings = load_settings(AlertsSettings)
    except SettingsError as exc:
        # One line naming each bad env var, not a traceback.
        sys.stderr.write(f"alerts: {exc}\n")
        sys.exit(2)
    alerts = AlertsApp(settings)
    # Migrations run as the database starts, before gRPC serves.
    run_service(settings, alerts.http_app(), alerts.components(), drain_seconds=1.0)


if __name__ == "__main__":
    main()
