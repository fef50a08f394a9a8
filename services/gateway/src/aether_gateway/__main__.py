"""`python -m aether_gateway`: settings from the environment, then serve until SIGTERM.

`run_service`'s steps, with the gateway's own listen address (127.0.0.1 in dev, see config).
"""

from __future__ import annotations

import sys
from typing import NoReturn

from aether_common import telemetry
from aether_common.logging import configure_logging
from aether_common.runner import ServiceRunner
from aether_common.settings import SettingsError, load_settings
from aether_gateway.app import create_app
from aether_gateway.config import GatewaySettings


def main() -> NoReturn:
    try:
        settings = load_settings(GatewaySettings)
    except SettingsError as exc:
        sys.exit(str(exc))  # one line naming each missing or bad env var, exit 1
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    telemetry.configure_telemetry(
        settings.service_name,
        otlp_endpoint=settings.otlp_endpoint,
        environment=settings.environment.value,
    )
    runner = ServiceRunner(create_app(settings), host=settings.listen_host, port=settings.http_port)
    code = runner.run_forever()
    telemetry.shutdown_telemetry()
    sys.exit(code)


if __name__ == "__main__":
    main()
