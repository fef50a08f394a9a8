"""Retention archives (docs/archives.md): the `retention.archive` job type and its daily schedule.

The owning service writes its own archive before its purge deletes anything; the worker only
schedules and tracks that work through the owner's gRPC, as itself (its service token), and
never reads another service's datastore. Services with an archive today: chat
(ArchiveExpiredMessages: messages past CHAT_MESSAGE_RETENTION_DAYS to S3 Parquet, then deleted).

    chat = ChatArchiveClient(settings.chat_grpc_target, timeout_s=ARCHIVE_DEADLINE_S)
    job_type = retention_archive_type({ArchivedService.CHAT: chat}, token=credentials.token)
    schedule = ArchiveSchedule(service, database, owner_id="service:worker")
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, field_validator

from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether_common.errors import AetherError, Timeout, Unavailable
from aether_common.grpc import Peer, ServiceClient
from aether_common.logging import get_logger
from aether_common.periodic import Periodic
from aether_common.postgres import PostgresDatabase, UnitOfWork
from aether_worker.callers import Caller
from aether_worker.handler import JobContext, JobFailed, JobType
from aether_worker.records import Job
from aether_worker.service import WorkerService

log = get_logger(__name__)

TYPE_NAME = "retention.archive"
# An archive run moves up to a day of messages per room and day: minutes, not seconds.
ARCHIVE_DEADLINE_S = 1800.0
# Object keys listed in a job's result (its count is always whole); the result stays small.
MAX_LISTED_OBJECTS = 50

TokenSource = Callable[[], Awaitable[str]]


class ArchivedService(StrEnum):
    """The services that keep an archive the worker can ask for."""

    CHAT = "chat"


class ArchiveParams(BaseModel):
    """`{"service": "chat", "before"?: RFC 3339}`: `before` narrows the run to older data (the
    owner refuses one later than its retention allows)."""

    model_config = ConfigDict(extra="forbid")

    service: ArchivedService
    before: datetime | None = None

    @field_validator("before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone (e.g. 2025-01-01T00:00:00Z)")
        return value


class Archiver(Protocol):
    """One owner's archive run, as the job sees it."""

    async def archive(self, before: datetime | None, *, token: str) -> dict[str, Any]: ...


CHAT = Peer(
    "chat",
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
    chat_pb2_grpc.ChatServiceStub,
    # A rerun merges into the same objects and deletes only what they hold: safe to retry.
    idempotent=("ArchiveExpiredMessages",),
)


class ChatArchiveClient(ServiceClient["chat_pb2_grpc.ChatServiceAsyncStub"]):
    """Component: the channel to chat for ArchiveExpiredMessages. Readiness does not wait on
    chat: only archive jobs need it, and they retry while it is away."""

    def __init__(self, target: str, *, timeout_s: float = ARCHIVE_DEADLINE_S) -> None:
        super().__init__(CHAT, target, timeout_s=timeout_s, needs_peer=False, name="chat-archive")

    async def archive(self, before: datetime | None, *, token: str) -> dict[str, Any]:
        request = chat_pb2.ArchiveExpiredMessagesRequest()
        if before is not None:
            stamp = Timestamp()
            stamp.FromDatetime(before.astimezone(UTC))
            request.before.CopyFrom(stamp)
        answer = await self.call(self.stub.ArchiveExpiredMessages, request, token=token)
        objects = list(answer.objects)
        return {
            "cutoff": answer.cutoff.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z"),
            "archived": answer.archived,
            "deleted": answer.deleted,
            "rooms": answer.rooms,
            "bucket": answer.bucket,
            "objects": len(objects),
            "object_keys": objects[:MAX_LISTED_OBJECTS],
        }


def retention_archive_type(
    archivers: Mapping[ArchivedService, Archiver], *, token: TokenSource | None
) -> JobType:
    """The `retention.archive` job type (operators only): asks the named service to archive,
    then purge, what is past its retention, as the worker (`token`: its service token; None
    when the worker has no identity, and every such job fails). The owner's answer (counts,
    the cutoff, the objects written) is the job's result. The owner away or slow: a retryable
    failure (the run is idempotent). A refusal (permissions, a bad `before`): not retryable."""

    async def run(ctx: JobContext, params: ArchiveParams) -> dict[str, Any]:
        archiver = archivers.get(params.service)
        if archiver is None:
            raise JobFailed(
                "archive_not_configured",
                f"this worker has no address for {params.service.value}'s archive",
                retryable=False,
            )
        if token is None:
            raise JobFailed(
                "no_service_identity",
                "WORKER_AUTH_CLIENT_SECRET is unset: the worker cannot call as itself",
                retryable=False,
            )
        await ctx.progress(0, f"asking {params.service.value} to archive and purge")
        try:
            answer = await archiver.archive(params.before, token=await token())
        except (Unavailable, Timeout) as exc:
            raise JobFailed(f"{params.service.value}_unavailable", exc.detail) from exc
        except AetherError as exc:
            raise JobFailed(exc.error_code, exc.detail, retryable=False) from exc
        await ctx.progress(100, f"{answer['archived']} archived, {answer['deleted']} deleted")
        return {"service": params.service.value, **answer}

    return JobType(
        name=TYPE_NAME,
        params=ArchiveParams,
        run=run,
        user_may_submit=False,
        max_attempts=5,
        # One run per service at a time is plenty; the owner serialises its own runs too.
        concurrency=1,
        timeout_s=ARCHIVE_DEADLINE_S + 60,
    )


class ArchiveSchedule(Periodic):
    """Submits one `retention.archive` job per archived service per UTC day, once `hour_utc`
    has passed, through the worker's own service layer (quotas, the outbox, status events), as
    the worker's identity (`owner_id`). Every replica runs it; the idempotency key
    `retention.archive:<service>:<YYYY-MM-DD>` makes the day's job one job."""

    name = "archive-schedule"

    def __init__(
        self,
        service: WorkerService,
        database: PostgresDatabase,
        *,
        owner_id: str,
        services: Sequence[ArchivedService] = tuple(ArchivedService),
        hour_utc: int = 2,
        interval_s: float = 600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not 0 <= hour_utc <= 23:
            raise ValueError("hour_utc: 0 to 23")
        super().__init__(interval_s=interval_s)
        self._service = service
        self._db = database
        self._caller = Caller(owner_id, service=True)
        self._services = tuple(services)
        self._hour = hour_utc
        self._clock = clock

    async def run_once(self) -> list[str]:
        """The ids of the jobs this call created (none before the hour, or when another
        replica submitted today's already)."""
        now = self._clock().astimezone(UTC)
        if now.hour < self._hour:
            return []
        created: list[str] = []
        for archived in self._services:
            job_id = await self._submit(archived, now.date().isoformat())
            if job_id is not None:
                created.append(job_id)
                log.info("daily archive submitted", service=archived.value, job_id=job_id)
        return created

    async def _submit(self, archived: ArchivedService, day: str) -> str | None:
        """The new job's id, or None when the day's job exists (the idempotency key)."""
        submission = self._service.check(
            self._caller,
            type_name=TYPE_NAME,
            params_json=ArchiveParams(service=archived).model_dump_json(exclude_none=True),
            priority=0,
            idempotency_key=f"{TYPE_NAME}:{archived.value}:{day}",
            on_behalf_of="",
        )

        async def submit(uow: UnitOfWork) -> tuple[Job, bool]:
            return await self._service.submit(uow, self._caller, submission)

        job, created = await self._db.transaction(submit)
        return str(job.id) if created else None
