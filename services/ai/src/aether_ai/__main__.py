"""`python -m aether_ai`: HTTP (health, readiness, metrics) + gRPC + the outbox relay + the
user-deleted consumer + the job runner + the cache invalidation listener."""

from __future__ import annotations

import sys

from aether_ai.app import AiApp
from aether_ai.config import AiSettings
from aether_common.runner import run_service
from aether_common.settings import SettingsError, load_settings


def main() -> None:
    try:
        settings = load_settings(AiSettings)
    except SettingsError as exc:
        # One line naming each bad env var, not a traceback.
        sys.stderr.write(f"ai: {exc}\n")
        sys.exit(2)
    ai = AiApp(settings)
    run_service(settings, ai.http_app(), ai.components(), drain_seconds=1.0)


if __name__ == "__main__":
    main()
