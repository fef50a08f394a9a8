"""The job types this process knows (JobType, handler.py): looked up by name at submit time
(validation, permissions, quotas) and by the runner (one consumer and semaphore per type).

The app builds one from what its constructor is given: the shipped types, or, in tests, extra
test-only ones (a flaky, a poison, a slow type). Never a module global.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from aether_worker.handler import JobType

WORK_TOPIC_PREFIX = "aether.worker.work."


def work_topic(type_name: str, prefix: str = "") -> str:
    """`aether.worker.work.<type>.v1`, dots in the type's name as underscores (chart_render)."""
    return f"{prefix}{WORK_TOPIC_PREFIX}{type_name.replace('.', '_')}.v1"


class JobRegistry:
    def __init__(self, types: Iterable[JobType]) -> None:
        self._types: dict[str, JobType] = {}
        for job_type in types:
            if job_type.name in self._types:
                raise ValueError(f"job type {job_type.name!r} registered twice")
            if job_type.max_attempts < 1 or job_type.concurrency < 1:
                raise ValueError(f"job type {job_type.name!r}: max_attempts and concurrency >= 1")
            self._types[job_type.name] = job_type

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def __iter__(self) -> Iterator[JobType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)
