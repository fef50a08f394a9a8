"""What a unit of work offers in every datastore kind, and the loop that re-runs its body.

The boundary (an RPC, a route, a consumed message, a job) runs
`await database.transaction(body)`; `body(uow)` is the service call. The service writes through
the unit of work, queues events with `uow.emit()` (the outbox, same transaction) and side
effects with `uow.after_commit()` (mail, cache bumps), and never commits: the database does.

- `KeepWrites(error)`: a refusal whose writes must stay (a failed login records its event):
  the unit of work commits, runs its after-commit actions, then raises `error`.
- A transient error (`aether_common.outages`) re-runs the whole body in a fresh transaction, a
  bounded number of times; then it leaves as `Unavailable`, never INTERNAL.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aether_common import outages
from aether_common.errors import AetherError
from aether_common.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")
AfterCommit = Callable[[], Awaitable[None]]

DEFAULT_ATTEMPTS = 10


class KeepWrites(Exception):
    """Commit what the unit of work wrote, then raise `error` to the caller."""

    def __init__(self, error: AetherError) -> None:
        super().__init__(error.detail)
        self.error = error


class AfterCommitActions:
    """Actions to run once the transaction committed; a failure is logged, never raised (the
    state is committed: the call succeeded)."""

    def __init__(self) -> None:
        self._actions: list[AfterCommit] = []

    def after_commit(self, action: AfterCommit) -> None:
        self._actions.append(action)

    async def run_after_commit(self) -> None:
        actions, self._actions = self._actions, []
        for action in actions:
            try:
                await action()
            except Exception:
                log.exception("after-commit action failed", action=getattr(action, "__name__", ""))


async def retry_transient(
    attempt: Callable[[], Awaitable[T]],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    service: str = "",
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run `attempt` (one whole transaction) again while it fails transiently; once `attempts`
    are spent, or on an outage, raise `Unavailable` with Retry-After."""
    tried = 0
    while True:
        tried += 1
        try:
            return await attempt()
        except Exception as exc:
            failure = outages.classify(exc)
            if failure is None:
                raise
            if failure is outages.Failure.TRANSIENT and tried < attempts:
                if on_retry is not None:
                    on_retry()
                # Jittered, growing pause: the other writer finishes meanwhile.
                await asyncio.sleep(random.uniform(0, min(0.05, 0.002 * 2**tried)))  # noqa: S311
                continue
            log.warning("datastore unavailable", error=repr(exc), attempts=tried)
            unavailable = outages.as_unavailable(exc, service)
            assert unavailable is not None  # classified above
            raise unavailable from exc
