"""`python -m aether_memory`: HTTP (health, readiness, metrics) + gRPC + the content consumer."""

from __future__ import annotations

import sys

from aether_common.runner import run_service
from aether_common.settings import SettingsError, load_settings
from aether_memory.app import MemoryApp
from aether_memory.config import MemorySettings


def main() -> None:
    try:
        settings = load_settings(MemorySettings)
    except SettingsError as exc:
        # One line naming each bad env var, not a traceback.
        sys.stderr.write(f"memory: {exc}\n")
        sys.exit(2)
    memory = MemoryApp(settings)
    # Migrations, collections and the model load as their components start, before gRPC serves.
    run_service(settings, memory.http_app(), memory.components(), drain_seconds=1.0)


if __name__ == "__main__":
    main()
