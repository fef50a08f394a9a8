"""`python -m aether_worker`: HTTP (health, readiness, metrics) + gRPC + the outbox relay + the
work lanes (one per job type) + the scheduler, retention and the account-deletion consumer."""

from __future__ import annotations

import sys

from aether_common.runner import run_service
from aether_common.settings import SettingsError, load_settings
from aether_worker.app import WorkerApp
from aether_worker.config import WorkerSettings


def main() -> None:
    try:
        settings = load_settings(WorkerSettings)
    except SettingsError as exc:
        # One line naming each bad env var, not a traceback.
        sys.stderr.write(f"worker: {exc}\n")
        sys.exit(2)
    worker = WorkerApp(settings)
    # Migrations run as the database starts, before gRPC serves.
    run_service(settings, worker.http_app(), worker.components(), drain_seconds=1.0)


if __name__ == "__main__":
    main()
