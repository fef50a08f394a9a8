"""Wiring: every object of the service built once from its settings, and the components the
runner drives, in start order. `__main__` runs it; tests start the same components in-process:

    ai = AiApp(settings, grpc_host="127.0.0.1", grpc_port=0)
    for component in ai.components(events=False):
        await component.start()
    target = ai.grpc.address          # "127.0.0.1:<bound port>"
"""

from __future__ import annotations

from datetime import timedelta
from importlib.resources import files

from fastapi import FastAPI

from aether_ai.answers import Answers
from aether_ai.cache import BoundedLru, InvalidationListener, ResponseCache
from aether_ai.config import AiSettings
from aether_ai.consumers import UserEventsConsumer
from aether_ai.conversations import Conversations
from aether_ai.events import build_relay
from aether_ai.export import UserExport
from aether_ai.grpc import SERVICE_NAME, AiServicer, register
from aether_ai.jobs import JobRunner, Jobs
from aether_ai.llm import LlmClient
from aether_ai.market import MarketClient
from aether_ai.preferences import Preferences
from aether_ai.queue import ModelSlots
from aether_ai.rag import MemoryClient, Retriever
from aether_ai.retention import RetentionJob
from aether_ai.service import AiService
from aether_ai.usage import UsageStore
from aether_common.auth_jwks import verifying_server
from aether_common.events import EventProducer
from aether_common.http import create_http_app
from aether_common.lifecycle import Component
from aether_common.postgres import PostgresDatabase
from aether_common.redis_component import RedisComponent


class AiApp:
    def __init__(
        self, settings: AiSettings, *, grpc_host: str = "0.0.0.0", grpc_port: int | None = None
    ) -> None:
        s = self.settings = settings
        self.database = PostgresDatabase(
            s.database_url,
            service="ai",
            migrations=files("aether_ai") / "migrations",
            max_size=s.database_pool_size,
        )
        self.redis = RedisComponent(s.redis_url, timeout_s=s.redis_timeout_s)
        self.cache = ResponseCache(
            self.redis.client,
            BoundedLru(
                max_entries=s.cache_l1_max_entries,
                max_bytes=s.cache_l1_max_bytes,
                ttl_s=s.cache_ttl_s,
            ),
            prefix=s.cache_prefix,
            ttl_s=s.cache_ttl_s,
        )
        self.invalidations = InvalidationListener(self.redis.client, self.cache)
        self.llm = LlmClient(s.models, default_base_url=s.llm_base_url)
        self.slots = ModelSlots(s.max_concurrency, timeout_s=s.queue_timeout_s)
        self.memory = MemoryClient(s.memory_grpc_target, timeout_s=s.memory_timeout_s)
        self.market = (
            MarketClient(s.charts_grpc_target, timeout_s=s.charts_timeout_s)
            if s.charts_grpc_target
            else None
        )
        self.usage = UsageStore(self.database, topic_prefix=s.topic_prefix)
        self.conversations = Conversations(self.database, history_turns=s.history_turns)
        self.preferences = Preferences(self.database)
        self.jobs = Jobs(self.database)
        self.service = AiService(
            s,
            answers=Answers(
                self.llm, self.cache, self.slots, coalesce_s=s.stream_coalesce_ms / 1000
            ),
            retriever=Retriever(
                self.memory,
                limit=s.rag_limit,
                snippet_chars=s.rag_snippet_chars,
                min_score=s.rag_min_score,
            ),
            memory=self.memory,
            market=self.market,
            conversations=self.conversations,
            preferences=self.preferences,
            usage=self.usage,
            jobs=self.jobs,
            exports=UserExport(self.database),
        )
        self.job_runner = JobRunner(
            self.jobs,
            self.service.run_job,
            concurrency=s.job_concurrency,
            poll_s=s.job_poll_s,
            lease_s=s.job_lease_s,
            max_attempts=s.job_max_attempts,
        )
        self.retention = RetentionJob(
            self.database,
            interval_s=s.retention_interval_s,
            request_log=timedelta(days=s.request_log_retention_days),
            finished_jobs=timedelta(days=s.job_retention_days),
        )
        port = s.grpc_port if grpc_port is None else grpc_port
        self.auth, self.grpc = verifying_server(
            "ai", s, host=grpc_host, port=port, delegating_services=s.delegating_services
        )
        self.grpc.add_service(register, AiServicer(self.service), SERVICE_NAME)
        self.producer = EventProducer(s.kafka_bootstrap, client_id="aether-ai")
        self.relay = build_relay(
            self.database, self.producer, topic_prefix=s.topic_prefix, poll_s=s.outbox_poll_s
        )
        self.consumer = UserEventsConsumer(
            self.database,
            self.service,
            bootstrap=s.kafka_bootstrap,
            group_id=s.topic_prefix + s.consumer_group,
            topic_prefix=s.topic_prefix,
        )

    @property
    def grpc_port(self) -> int:
        """The bound gRPC port (the real one when built with grpc_port=0), once started."""
        return self.grpc.port

    def components(self, *, events: bool = True) -> list[Component]:
        """Start order (the runner stops them in reverse: gRPC first, the clients last).
        `events=False` leaves usage events in the outbox and consumes nothing (no Kafka needed);
        the job runner runs either way."""
        kafka: list[Component] = [self.producer, self.relay, self.consumer] if events else []
        return [
            self.database,
            self.redis,
            self.auth,
            self.llm,
            self.memory,
            *([self.market] if self.market else []),
            *kafka,
            self.invalidations,
            self.job_runner,
            self.retention,
            self.grpc,
        ]

    def http_app(self) -> FastAPI:
        return create_http_app("ai")
