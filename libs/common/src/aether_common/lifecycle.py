"""The one shape every long-running part of a service has, so runner.py can drive them all.

A gRPC server, a Kafka consumer and an outbox relay each start, report readiness and stop
gracefully; the runner starts them in order and stops them in reverse on SIGTERM.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Component(Protocol):
    name: str

    async def start(self) -> None:
        """Begin work; return once running (background tasks are the component's own)."""

    async def stop(self) -> None:
        """Finish in-flight work within the component's grace period, then release resources."""

    async def ready(self) -> bool:
        """True while the component can do its job (used by /readyz)."""


class Check(Protocol):
    """A dependency check for /readyz (a database ping, a broker metadata call...)."""

    name: str

    async def __call__(self) -> bool: ...
