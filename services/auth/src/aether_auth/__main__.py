"""`python -m aether_auth`: HTTP (health, readiness, metrics, JWKS) + gRPC + outbox relay."""

from __future__ import annotations

import sys

from aether_auth.app import AuthApp
from aether_auth.config import AuthSettings
from aether_common.runner import run_service
from aether_common.settings import SettingsError, load_settings


def main() -> None:
    try:
        settings = load_settings(AuthSettings)
    except SettingsError as exc:
        # One line naming each bad env var, not a traceback.
        sys.stderr.write(f"auth: {exc}\n")
        sys.exit(2)
    auth = AuthApp(settings)
    # Migrations run when the database component starts, before anything serves.
    run_service(settings, auth.http_app(), auth.components(), drain_seconds=1.0)


if __name__ == "__main__":
    main()
