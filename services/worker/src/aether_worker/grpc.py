"""The WorkerService gRPC servicer: identify the caller, check the request, open the unit of
work (writes) or take a pooled connection (reads), call the service, answer. Artifacts are
answered with signed URLs (signed locally, after the connection went back). A datastore away
answers UNAVAILABLE, never INTERNAL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aether.worker.v1 import worker_pb2, worker_pb2_grpc
from aether_common.grpc.interceptors import Context
from aether_common.postgres import PostgresDatabase
from aether_common.s3 import S3Bucket
from aether_worker import artifacts, repository, schemas
from aether_worker.config import WorkerSettings
from aether_worker.records import Job
from aether_worker.service import WorkerService
from aether_worker.watch import JobWatcher

SERVICE_NAME = worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name


def register(servicer: WorkerServicer, server: Any) -> None:
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, server)


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(
        self,
        service: WorkerService,
        database: PostgresDatabase,
        bucket: S3Bucket,
        watcher: JobWatcher,
        settings: WorkerSettings,
    ) -> None:
        self._service = service
        self._db = database
        self._bucket = bucket
        self._watcher = watcher
        self._s = settings

    async def _pb(self, job: Job) -> worker_pb2.Job:
        signed = await artifacts.signed(self._bucket, job, self._s.artifact_url_expiry_s)
        return schemas.job_pb(job, signed)

    async def SubmitJob(
        self, request: worker_pb2.SubmitJobRequest, context: Context
    ) -> worker_pb2.SubmitJobResponse:
        caller = self._service.caller()
        submission = self._service.check(
            caller,
            type_name=request.type,
            params_json=request.params_json,
            priority=request.priority,
            idempotency_key=request.idempotency_key,
            on_behalf_of=request.on_behalf_of,
        )
        job, created = await self._db.transaction(
            lambda uow: self._service.submit(uow, caller, submission)
        )
        return worker_pb2.SubmitJobResponse(job=await self._pb(job), created=created)

    async def GetJob(
        self, request: worker_pb2.GetJobRequest, context: Context
    ) -> worker_pb2.GetJobResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            job = await self._service.get(conn, caller, request.id)
        return worker_pb2.GetJobResponse(job=await self._pb(job))

    async def ListJobs(
        self, request: worker_pb2.ListJobsRequest, context: Context
    ) -> worker_pb2.ListJobsResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            page = await self._service.list_jobs(
                conn,
                caller,
                status=request.status,
                type_name=request.type,
                limit=request.limit,
                cursor=request.cursor,
            )
        jobs = await asyncio.gather(*(self._pb(job) for job in page.items))
        return worker_pb2.ListJobsResponse(jobs=jobs, next_cursor=page.next_cursor)

    async def CancelJob(
        self, request: worker_pb2.CancelJobRequest, context: Context
    ) -> worker_pb2.CancelJobResponse:
        caller = self._service.caller()
        job = await self._db.transaction(lambda uow: self._service.cancel(uow, caller, request.id))
        return worker_pb2.CancelJobResponse(job=await self._pb(job))

    async def WatchJob(
        self, request: worker_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[worker_pb2.WatchJobResponse]:
        caller = self._service.caller()
        parsed = repository.parse_id(request.id)
        # Subscribed before the first read: no change between the two is missed.
        with self._watcher.subscribe(str(parsed) if parsed else request.id) as changed:
            async with self._db.connection() as conn:
                job = await self._service.get(conn, caller, request.id)
            yield worker_pb2.WatchJobResponse(job=await self._pb(job))
            while not job.status.final:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), self._s.watch_poll_s)
                changed.clear()
                async with self._db.connection() as conn:
                    now = await self._service.get(conn, caller, request.id)
                if now != job:  # a lease renewal notifies too, and changes nothing shown
                    job = now
                    yield worker_pb2.WatchJobResponse(job=await self._pb(job))

    async def ListDeadJobs(
        self, request: worker_pb2.ListDeadJobsRequest, context: Context
    ) -> worker_pb2.ListDeadJobsResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            page = await self._service.list_dead(
                conn, caller, type_name=request.type, limit=request.limit, cursor=request.cursor
            )
        jobs = await asyncio.gather(*(self._pb(job) for job in page.items))
        return worker_pb2.ListDeadJobsResponse(jobs=jobs, next_cursor=page.next_cursor)

    async def ReplayDeadJob(
        self, request: worker_pb2.ReplayDeadJobRequest, context: Context
    ) -> worker_pb2.ReplayDeadJobResponse:
        caller = self._service.caller()
        job = await self._db.transaction(lambda uow: self._service.replay(uow, caller, request.id))
        return worker_pb2.ReplayDeadJobResponse(job=await self._pb(job))
