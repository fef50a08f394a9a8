"""Running jobs: one lane per job type, each a Kafka consumer group member on the type's work
topic with its own concurrency (docs/worker.md "Topics and lanes").

A lane reads "run job X" messages, claims each job in PostgreSQL (status running, attempts+1,
a fresh attempt token, a lease) and commits the Kafka offset once the claim is durable; then it
runs the handler in a task of its own. So a slow job holds one of its type's slots, never the
partition: the messages behind it are claimed by the free slots. With every slot busy the lane
pauses its partitions (still polling, so it keeps its group membership) until one frees up;
other types have their own lanes and never wait on it. A duplicate or stale message finds
nothing to claim and is skipped.

While an attempt runs, a heartbeat renews its lease every lease_s / 3 and learns of a
cancellation; an attempt whose lease ran out (it was paused too long) is stopped, since its
job belongs to another attempt now. Outcomes go through transitions.py, fenced by the token.
Stopping a lane stops its consumer, lets running attempts finish for `WORKER_STOP_GRACE_S`,
then hands the rest back (queued again, uncounted).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from aether.worker.v1 import events_pb2
from aether_common import outages
from aether_common.errors import AetherError, Unavailable
from aether_common.events import MalformedEvent, TopicSpec, ensure_topics, event_from_record
from aether_common.logging import get_logger
from aether_common.postgres import PostgresDatabase, UnitOfWork
from aether_common.s3 import S3Bucket
from aether_worker import repository
from aether_worker.config import WorkerSettings
from aether_worker.context import AttemptContext, AttemptFenced
from aether_worker.handler import JobCancelled, JobFailed, JobType
from aether_worker.metrics import ATTEMPTS, QUEUE_WAIT_SECONDS, RUN_SECONDS, RUNNING
from aether_worker.records import Claim, Job
from aether_worker.registry import JobRegistry, work_topic
from aether_worker.transitions import Transitions

log = get_logger(__name__)
T = TypeVar("T")

START_BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0
MAX_ERROR_MESSAGE = 1000


def worker_id() -> str:
    """This process, as jobs record who runs them."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Lane:
    """One job type's consumer and slots."""

    def __init__(
        self,
        job_type: JobType,
        *,
        settings: WorkerSettings,
        database: PostgresDatabase,
        bucket: S3Bucket,
        transitions: Transitions,
        worker: str,
    ) -> None:
        self.job_type = job_type
        self.name = f"lane:{job_type.name}"
        self.topic = work_topic(job_type.name, settings.topic_prefix)
        self._s = settings
        self._db = database
        self._bucket = bucket
        self._transitions = transitions
        self._worker = worker
        self._stop_grace_s = settings.stop_grace_s
        self._group = f"{settings.topic_prefix}{settings.consumer_group}.work.{job_type.name}"
        self._attempts: dict[asyncio.Task[None], Claim] = {}
        self._freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._releasing = False
        self._task: asyncio.Task[None] | None = None
        # Set once the consumer has joined its group (tests wait for it).
        self.consuming = asyncio.Event()

    # -- Component -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._consume(), name=self.name)

    async def stop(self) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        running = list(self._attempts)
        if running:
            _, late = await asyncio.wait(running, timeout=self._stop_grace_s)
            self._releasing = True
            for attempt in late:
                attempt.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def running(self) -> int:
        return len(self._attempts)

    # -- consuming -------------------------------------------------------------------------------
    async def _consume(self) -> None:
        backoff = START_BACKOFF_S
        while not self._stopping.is_set():
            kafka = AIOKafkaConsumer(
                self.topic,
                bootstrap_servers=self._s.kafka_bootstrap,
                group_id=self._group,
                client_id=f"aether-worker-{self.job_type.name}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=self._s.work_fetch_max_wait_ms,
                session_timeout_ms=10_000,
                heartbeat_interval_ms=3_000,
            )
            try:
                await ensure_topics(
                    self._s.kafka_bootstrap,
                    [TopicSpec(self.topic, partitions=self._s.work_partitions)],
                )
                await kafka.start()
            except Exception as exc:  # Kafka away: the API serves meanwhile; keep trying
                log.warning("work consumer cannot start yet", lane=self.name, error=repr(exc))
                with contextlib.suppress(Exception):
                    await kafka.stop()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = START_BACKOFF_S
            try:
                await self._loop(kafka)
            except Exception as exc:
                log.warning("work consumer failed; restarting", lane=self.name, error=repr(exc))
                await asyncio.sleep(START_BACKOFF_S)
            finally:
                self.consuming.clear()
                with contextlib.suppress(Exception):
                    await kafka.stop()

    async def _loop(self, kafka: AIOKafkaConsumer) -> None:
        paused: set[TopicPartition] = set()
        while not self._stopping.is_set():
            free = self.job_type.concurrency - len(self._attempts)
            if free <= 0:
                # Every slot busy: stop fetching, keep polling (group membership), wait for one.
                assigned = kafka.assignment()
                if assigned - paused:
                    kafka.pause(*assigned)
                    paused = set(assigned)
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), 1.0)
                await kafka.getmany(timeout_ms=0)
                continue
            if paused:
                kafka.resume(*paused)
                paused = set()
            batches = await kafka.getmany(timeout_ms=500, max_records=free)
            self.consuming.set()
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batches.items():
                for record in records:
                    await self._take(record)
                    offsets[tp] = record.offset + 1
            if offsets:
                # After the claims are durable: a crash before this re-reads messages whose
                # claims are made, which then find nothing to claim.
                await kafka.commit(offsets)

    async def _take(self, record: Any) -> None:
        try:
            event = event_from_record(record.headers, record.value, events_pb2.JobWork)
            job_id = uuid.UUID(event.payload.job_id)
        except (MalformedEvent, ValueError) as exc:
            log.warning("malformed work message skipped", lane=self.name, error=str(exc))
            return
        claim = await self._durably(
            lambda uow: self._transitions.claim(uow, job_id, worker=self._worker)
        )
        if claim is None:
            return  # a duplicate, stale or cancelled job's message
        job = claim.job
        if job.attempts == 1:
            QUEUE_WAIT_SECONDS.labels(job.type).observe(
                max(0.0, (job.updated_at - job.created_at).total_seconds())
            )
        task = asyncio.create_task(self._attempt(claim), name=f"job:{job.id}")
        self._attempts[task] = claim
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._attempts.pop(task, None)
        self._freed.set()

    async def _durably(self, body: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """Runs a transaction until it commits: PostgreSQL away is waited out, since a claim or
        an outcome must not be lost (an attempt's outcome that comes too late is fenced off)."""
        delay = START_BACKOFF_S
        while True:
            try:
                return await self._db.transaction(body)
            except Unavailable as exc:
                log.warning("database unavailable; retrying", lane=self.name, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    # -- one attempt -----------------------------------------------------------------------------
    async def _attempt(self, claim: Claim) -> None:
        job_type, job = self.job_type, claim.job
        ctx = AttemptContext(claim, self._db, self._bucket)
        run = asyncio.create_task(self._run(ctx, job), name=f"run:{job.id}")
        beat = asyncio.create_task(self._heartbeat(ctx, run), name=f"lease:{job.id}")
        RUNNING.labels(job_type.name).inc()
        started = time.monotonic()
        try:
            outcome = await self._outcome_of(run, ctx)
        except asyncio.CancelledError:
            run.cancel()
            with contextlib.suppress(BaseException):
                await run
            if self._releasing:  # the lane is stopping: hand the job back, uncounted
                await self._durably(lambda uow: self._transitions.release(uow, claim))
            raise
        finally:
            beat.cancel()
            RUNNING.labels(job_type.name).dec()
            RUN_SECONDS.labels(job_type.name).observe(time.monotonic() - started)
        if outcome is None:
            ATTEMPTS.labels(job_type.name, "fenced").inc()
            return
        settled = await self._durably(outcome)
        if settled is None:
            ATTEMPTS.labels(job_type.name, "fenced").inc()

    async def _run(self, ctx: AttemptContext, job: Job) -> dict[str, Any]:
        params = self.job_type.params.model_validate(job.params)
        async with asyncio.timeout(self.job_type.timeout_s):
            return await self.job_type.run(ctx, params)

    async def _outcome_of(
        self, run: asyncio.Task[dict[str, Any]], ctx: AttemptContext
    ) -> Callable[[UnitOfWork], Awaitable[Job | None]] | None:
        """What the attempt's end writes (None: nothing, it lost the job)."""
        t, claim = self._transitions, ctx.claim
        try:
            result = await run
        except AttemptFenced:
            return None
        except asyncio.CancelledError:
            if ctx.lost:
                return None  # the heartbeat stopped it: the lease was lost
            raise  # the lane is stopping
        except JobCancelled:
            return lambda uow: t.cancelled(uow, claim)
        except JobFailed as exc:
            code, message, retryable = exc.code, exc.message[:MAX_ERROR_MESSAGE], exc.retryable
            return lambda uow: t.failed(uow, claim, code, message, retryable=retryable)
        except TimeoutError:
            message = f"the attempt ran past {self.job_type.timeout_s:g} s"
            return lambda uow: t.failed(uow, claim, "timeout", message, retryable=True)
        except AetherError as exc:  # a dependency's typed error: transient ones are retried
            code, message = exc.error_code, exc.detail[:MAX_ERROR_MESSAGE]
            retryable = isinstance(exc, Unavailable) or exc.http_status >= 500
            return lambda uow: t.failed(uow, claim, code, message, retryable=retryable)
        except Exception as exc:
            if outages.classify(exc) is None:
                log.exception("job handler failed", job_id=ctx.job_id, type=self.job_type.name)
            message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_MESSAGE]
            return lambda uow: t.failed(uow, claim, "handler_error", message, retryable=True)
        checked = self._checked_result(result)
        if isinstance(checked, str):
            return lambda uow: t.failed(uow, claim, "invalid_result", checked, retryable=False)
        return lambda uow: t.complete(uow, claim, checked)

    def _checked_result(self, result: Any) -> dict[str, Any] | str:
        """The result, or why it cannot be stored (not an object, not JSON, too large)."""
        if not isinstance(result, dict):
            return f"the handler returned {type(result).__name__}, not a JSON object"
        try:
            encoded = orjson.dumps(result)
        except TypeError as exc:
            return f"the result is not JSON: {exc}"
        if len(encoded) > self._s.max_result_bytes:
            return (
                f"the result is {len(encoded)} bytes; at most {self._s.max_result_bytes}"
                " are kept inline (store larger outputs as artifacts)"
            )
        decoded: dict[str, Any] = orjson.loads(encoded)
        return decoded

    async def _heartbeat(self, ctx: AttemptContext, run: asyncio.Task[Any]) -> None:
        """Renews the lease; stops the run once the lease is lost."""
        every = self._s.lease_s / 3
        while not run.done():
            await asyncio.sleep(every)
            try:
                async with self._db.connection() as conn:
                    flag = await repository.heartbeat(
                        conn, ctx.claim.job.id, ctx.claim.token, self._s.lease_s
                    )
            except Unavailable as exc:  # the lease may run out meanwhile: then fenced
                log.warning("lease renewal failed", job_id=ctx.job_id, error=repr(exc))
                continue
            if flag is None:
                log.warning("attempt lost its lease; stopping it", job_id=ctx.job_id)
                ctx.lost = True
                run.cancel()
                return
            if flag:
                ctx.cancel_seen = True


class Runner:
    """Component: every lane of this process (none when `run_jobs` is off)."""

    name = "runner"

    def __init__(
        self,
        registry: JobRegistry,
        *,
        settings: WorkerSettings,
        database: PostgresDatabase,
        bucket: S3Bucket,
        transitions: Transitions,
    ) -> None:
        self.worker = worker_id()
        self.lanes = {
            job_type.name: Lane(
                job_type,
                settings=settings,
                database=database,
                bucket=bucket,
                transitions=transitions,
                worker=self.worker,
            )
            for job_type in registry
        }

    async def start(self) -> None:
        for lane in self.lanes.values():
            await lane.start()

    async def stop(self) -> None:
        await asyncio.gather(*(lane.stop() for lane in self.lanes.values()))

    async def ready(self) -> bool:
        return all([await lane.ready() for lane in self.lanes.values()])

    async def wait_consuming(self, within_s: float) -> None:
        """Until every lane has joined its group (tests)."""
        await asyncio.wait_for(
            asyncio.gather(*(lane.consuming.wait() for lane in self.lanes.values())), within_s
        )
