"""Wiring: every object of the service built once from its settings, and the components the
runner drives, in start order. `__main__` runs it; tests start the same components in-process,
with job types of their own:

    worker = WorkerApp(settings, grpc_host="127.0.0.1", grpc_port=0, job_types=[NOOP, FLAKY])
    for component in worker.components():
        await component.start()
    target = worker.grpc.address        # "127.0.0.1:<bound port>"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files

from fastapi import FastAPI

from aether_common.auth_jwks import verifying_server
from aether_common.errors import Unavailable
from aether_common.events import EventProducer, PgOutboxRelay, RelayOptions
from aether_common.http import create_http_app
from aether_common.lifecycle import Component
from aether_common.mailer import Mailer, SmtpServer
from aether_common.postgres import PostgresDatabase, jsonb_as_objects
from aether_common.s3 import S3Bucket
from aether_common.service_tokens import ServiceCredentials
from aether_worker import events
from aether_worker.ai_client import AiClient
from aether_worker.ai_generate import ai_generate_job
from aether_worker.archives import (
    TYPE_NAME as ARCHIVE_TYPE,
)
from aether_worker.archives import (
    ArchivedService,
    ArchiveSchedule,
    ChatArchiveClient,
    retention_archive_type,
)
from aether_worker.backtest import backtest_job
from aether_worker.backtest_pool import ComputePool
from aether_worker.candles import ChartsClient
from aether_worker.config import WorkerSettings
from aether_worker.consumers import AccountConsumer
from aether_worker.exports_clients import ExportClient, export_clients
from aether_worker.gdpr_export import ExportMail, gdpr_export_job
from aether_worker.grpc import SERVICE_NAME, WorkerServicer, register
from aether_worker.handler import JobType
from aether_worker.noop import NOOP
from aether_worker.registry import JobRegistry
from aether_worker.reindex import MemoryIndexClient, memory_reindex_type
from aether_worker.render import render_job
from aether_worker.retention import Retention
from aether_worker.runner import Runner
from aether_worker.scheduler import Scheduler
from aether_worker.service import WorkerService
from aether_worker.transitions import Backoff, Transitions
from aether_worker.watch import JobWatcher


@dataclass(frozen=True)
class Peers:
    """What the shipped job types call: the other services, the backtests' processes, mail."""

    charts: ChartsClient
    compute: ComputePool
    ai: AiClient
    chat: ChatArchiveClient
    memory_index: MemoryIndexClient
    exports: dict[str, ExportClient]
    export_mail: ExportMail

    def components(self) -> list[Component]:
        clients: list[Component] = [self.charts, self.ai, self.chat, self.memory_index]
        return [*clients, *self.exports.values(), self.compute]


def shipped_types(
    peers: Peers, credentials: ServiceCredentials | None, database: PostgresDatabase
) -> list[JobType]:
    """The job types `python -m aether_worker` runs. Without a service identity the worker can
    act for no one (`ai.generate` and `gdpr.export` are not offered) and archive jobs fail at
    once."""
    token = credentials.token if credentials is not None else None
    types = [
        NOOP,
        backtest_job(peers.charts, peers.compute),
        render_job(peers.charts),
        retention_archive_type({ArchivedService.CHAT: peers.chat}, token=token),
        memory_reindex_type(peers.memory_index, token=token),
    ]
    if credentials is not None:
        types.append(ai_generate_job(peers.ai, credentials))
        types.append(gdpr_export_job(peers.exports, credentials, database, peers.export_mail))
    return types


class WorkerApp:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        grpc_host: str = "0.0.0.0",
        grpc_port: int | None = None,
        job_types: Sequence[JobType] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        s = self.settings = settings
        # Its own identity (service tokens from auth), for handlers that call other services
        # as the worker; none without a secret (then those calls are UNAVAILABLE: retried).
        secret = s.auth_client_secret
        self.credentials = (
            None
            if secret is None
            else ServiceCredentials(
                s.auth_grpc_target, s.auth_client_id, secret, timeout_s=s.auth_timeout_s
            )
        )
        self.database = PostgresDatabase(
            s.database_url,
            service="worker",
            migrations=files("aether_worker") / "migrations",
            max_size=s.database_pool_size,
            init=jsonb_as_objects,
        )
        self.peers = Peers(
            charts=ChartsClient(
                s.charts_grpc_target, timeout_s=s.charts_timeout_s, token=self._service_token
            ),
            compute=ComputePool(workers=s.compute_workers),
            ai=AiClient(
                s.ai_grpc_target, timeout_s=s.ai_timeout_s, answer_timeout_s=s.ai_answer_timeout_s
            ),
            chat=ChatArchiveClient(s.chat_grpc_target),
            memory_index=MemoryIndexClient(s.memory_grpc_target),
            exports=export_clients(
                {
                    "auth": s.auth_grpc_target,
                    "chat": s.chat_grpc_target,
                    "ai": s.ai_grpc_target,
                    "alerts": s.alerts_grpc_target,
                    "memory": s.memory_grpc_target,
                },
                timeout_s=s.export_timeout_s,
            ),
            export_mail=ExportMail(
                Mailer(
                    SmtpServer(
                        s.smtp_host,
                        s.smtp_port,
                        username=s.smtp_username,
                        password=s.smtp_password,
                        starttls=s.smtp_starttls,
                        tls=s.smtp_tls,
                        timeout_s=s.smtp_timeout_s,
                    ),
                    sender=s.mail_from,
                ),
                s.public_url,
            ),
        )
        if job_types is None:
            job_types = shipped_types(self.peers, self.credentials, self.database)
        self.registry = JobRegistry(job_types)
        # Artifacts; the bucket is made at start in dev and test (Terraform makes production's).
        self.bucket = S3Bucket.from_settings(s, service="worker")
        self.transitions = Transitions(s, backoff=backoff)
        self.service = WorkerService(s, self.registry)
        self.watcher = JobWatcher(s.database_url)
        port = s.grpc_port if grpc_port is None else grpc_port
        self.auth, self.grpc = verifying_server("worker", s, host=grpc_host, port=port)
        self.grpc.add_service(
            register,
            WorkerServicer(self.service, self.database, self.bucket, self.watcher, s),
            SERVICE_NAME,
        )
        # Status events and work messages leave through the outbox (sent once committed).
        self.producer = EventProducer(s.kafka_bootstrap, client_id="aether-worker")
        self.relay = PgOutboxRelay(
            s.database_url,
            self.producer,
            topics=events.topic_specs(
                self.registry.names(), prefix=s.topic_prefix, work_partitions=s.work_partitions
            ),
            options=RelayOptions(active_poll_s=s.outbox_poll_s),
        )
        self.runner = Runner(
            self.registry,
            settings=s,
            database=self.database,
            bucket=self.bucket,
            transitions=self.transitions,
        )
        self.scheduler = Scheduler(
            self.database,
            self.transitions,
            interval_s=s.scheduler_interval_s,
            batch=s.scheduler_batch,
        )
        # Daily archive jobs, where this process offers the type (tests bring their own types).
        self.archive_schedule = (
            ArchiveSchedule(
                self.service,
                self.database,
                owner_id=f"service:{s.auth_client_id}",
                services=[ArchivedService.CHAT],
                hour_utc=s.archive_hour_utc,
                interval_s=s.archive_check_interval_s,
            )
            if ARCHIVE_TYPE in self.registry.names()
            else None
        )
        self.retention = Retention(
            self.database, self.bucket, interval_s=s.purge_interval_s, batch=s.purge_batch
        )
        self.accounts = AccountConsumer(
            self.database,
            self.bucket,
            bootstrap=s.kafka_bootstrap,
            group_id=s.topic_prefix + s.consumer_group,
            topic_prefix=s.topic_prefix,
        )

    async def _service_token(self) -> str:
        if self.credentials is None:
            raise Unavailable(
                "the worker has no service identity (WORKER_AUTH_CLIENT_SECRET is not set)"
            )
        return await self.credentials.token()

    def components(self, *, events: bool = True, run_jobs: bool | None = None) -> list[Component]:
        """Start order (the runner stops them in reverse: gRPC first). `events=False` publishes
        and consumes nothing (the outbox fills; no Kafka needed); `run_jobs=False` serves the API
        without running jobs (default: WORKER_RUN_JOBS)."""
        running = self.settings.run_jobs if run_jobs is None else run_jobs
        kafka: list[Component] = [self.producer, self.relay, self.accounts] if events else []
        lanes: list[Component] = (
            [*self.peers.components(), self.runner] if events and running else []
        )
        identity: list[Component] = [self.credentials] if self.credentials is not None else []
        return [
            self.database,
            self.bucket,
            self.auth,
            *identity,
            self.watcher,
            self.scheduler,
            *([self.archive_schedule] if self.archive_schedule is not None else []),
            self.retention,
            *kafka,
            *lanes,
            self.grpc,
        ]

    def http_app(self) -> FastAPI:
        return create_http_app("worker")
