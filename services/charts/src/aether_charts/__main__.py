"""`python -m aether_charts`: HTTP (health, readiness, metrics) + gRPC + the bundled history
loader."""

from __future__ import annotations

import sys

from aether_charts.app import ChartsApp
from aether_charts.config import ChartsSettings
from aether_common.runner import run_service
from aether_common.settings import SettingsError, load_settings


def main() -> None:
    try:
        settings = load_settings(ChartsSettings)
    except SettingsError as exc:
        # One line naming each bad env var, not a traceback.
        sys.stderr.write(f"charts: {exc}\n")
        sys.exit(2)
    charts = ChartsApp(settings)
    run_service(settings, charts.http_app(), charts.components(), drain_seconds=1.0)


if __name__ == "__main__":
    main()
