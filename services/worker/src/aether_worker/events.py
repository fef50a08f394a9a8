"""What the worker writes to its outbox (docs/events.md, docs/worker.md "Topics").

- `aether.job.status_changed.v1` (key = job id): every status a job enters, in order per job.
  Payload: aether.worker.v1.JobStatusChanged.
- `aether.worker.work.<type>.v1` (key = job id): "run job X", one topic per type so each type
  has its own consumer and concurrency. Payload: aether.worker.v1.JobWork.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aether.worker.v1 import events_pb2
from aether_common.events import Event, TopicSpec
from aether_worker import schemas
from aether_worker.records import Job
from aether_worker.registry import work_topic

SOURCE = "worker"
STATUS_CHANGED = "aether.job.status_changed.v1"


def topic_specs(type_names: Iterable[str], *, prefix: str, work_partitions: int) -> list[TopicSpec]:
    return [
        TopicSpec(prefix + STATUS_CHANGED),
        *(TopicSpec(work_topic(name, prefix), partitions=work_partitions) for name in type_names),
    ]


def status_changed(job: Job, previous: str, prefix: str = "") -> Event[Any]:
    payload = events_pb2.JobStatusChanged(
        job=schemas.job_pb(job), previous_status=previous, dead=job.dead
    )
    return Event(type=prefix + STATUS_CHANGED, subject=str(job.id), payload=payload, source=SOURCE)


def work(job: Job, prefix: str = "") -> Event[Any]:
    payload = events_pb2.JobWork(job_id=str(job.id), type=job.type)
    return Event(
        type=work_topic(job.type, prefix), subject=str(job.id), payload=payload, source=SOURCE
    )
