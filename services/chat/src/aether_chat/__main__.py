"""`python -m aether_chat`: HTTP (health, readiness, metrics) + gRPC + outbox relay + the
user-deleted consumer + the retention job."""

from __future__ import annotations

import sys

from aether_chat.app import ChatApp
from aether_chat.config import ChatSettings
from aether_common.runner import run_service
from aether_common.settings import SettingsError, load_settings


def main() -> None:
    try:
        settings = load_settings(ChatSettings)
    except SettingsError as exc:
        # One line naming each bad env var, not a traceback.
        sys.stderr.write(f"chat: {exc}\n")
        sys.exit(2)
    chat = ChatApp(settings)
    # Indexes are created when the database component starts, before anything serves.
    run_service(settings, chat.http_app(), chat.components(), drain_seconds=1.0)


if __name__ == "__main__":
    main()
