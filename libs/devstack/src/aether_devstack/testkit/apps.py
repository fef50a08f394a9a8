"""Apps started in-process the way their `__main__` does, and the typed errors of calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from aether_common.errors import AetherError
from aether_common.grpc import checked, create_channel
from aether_common.lifecycle import Component


@dataclass
class _Started:
    components: list[Component] = field(default_factory=list)
    channel: grpc.aio.Channel | None = None
    before_stop: Callable[[list[Component]], Awaitable[None]] | None = None


class AppRunner:
    """Starts apps the way their `__main__` does (components in order) and stops every one,
    newest first: its channel closed, its `before_stop` hook run, its components stopped in
    reverse. A component that failed to start is not stopped; the ones before it are."""

    def __init__(self) -> None:
        self._apps: list[_Started] = []

    async def start(
        self,
        components: Iterable[Component],
        *,
        before_stop: Callable[[list[Component]], Awaitable[None]] | None = None,
    ) -> None:
        """Start `components` in order; `before_stop(those started)` runs before they stop."""
        started = _Started(before_stop=before_stop)
        self._apps.append(started)
        for component in components:
            await component.start()
            started.components.append(component)

    def connect(self, address: str, *, timeout: float) -> grpc.aio.Channel:
        """A channel to the app started last, closed when it stops."""
        channel = create_channel(address, default_timeout=timeout)
        self._apps[-1].channel = channel
        return channel

    async def stop(self) -> None:
        while self._apps:
            app = self._apps.pop()
            if app.channel is not None:
                await app.channel.close(grace=None)
            if app.before_stop is not None:
                await app.before_stop(app.components)
            for component in reversed(app.components):
                await component.stop()


async def failure(call: Awaitable[Any]) -> AetherError:
    """The typed error a call failed with (rebuilt from its gRPC status and details)."""
    try:
        await checked(call)
    except AetherError as exc:
        return exc
    raise AssertionError("the call succeeded")


async def _drain(call: Any) -> list[Any]:
    return [event async for event in call]


async def stream_failure(call: Any) -> AetherError:
    """The typed error a streaming call failed with (after any events it sent)."""
    return await failure(_drain(call))
