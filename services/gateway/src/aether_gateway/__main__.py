"""`python -m aether_gateway`: HTTP (the public API, the WebSockets, probes, metrics).

Started and stopped like every service (`run_service`); the gateway only picks its listen
address (127.0.0.1 in dev, see config). Bad settings: one line naming each env var, exit 2.
"""

from __future__ import annotations

import sys

from aether_common.runner import run_service
from aether_common.settings import SettingsError, load_settings
from aether_gateway.app import create_app
from aether_gateway.config import GatewaySettings


def main() -> None:
    try:
        settings = load_settings(GatewaySettings)
    except SettingsError as exc:
        # One line naming each bad env var, not a traceback.
        sys.stderr.write(f"gateway: {exc}\n")
        sys.exit(2)
    run_service(settings, create_app(settings), host=settings.listen_host)


if __name__ == "__main__":
    main()
