"""Component base for upkeep that runs every so often (purges, retention, key reloads).

    class Retention(Periodic):
        name = "retention"
        async def run_once(self) -> int: ...

`run_once()` is called every `interval_s` (first after one interval: start-up stays quick) and
may be called directly (tests, admin tools). A failing run is logged and the next one tries
again: upkeep must outlive a database hiccup.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from typing import Any

from aether_common import outages
from aether_common.logging import get_logger

log = get_logger(__name__)


class Periodic(ABC):
    name: str

    def __init__(self, *, interval_s: float) -> None:
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def run_once(self) -> Any:
        """One round of the upkeep."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.run_once()
            except Exception as exc:
                if outages.classify(exc) is not None:  # expected now and then: no traceback
                    log.warning("datastore unavailable; will retry", job=self.name, error=repr(exc))
                else:
                    log.exception("periodic run failed; will retry", job=self.name)
