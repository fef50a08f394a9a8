"""Wiring: every object of the service built once from its settings, and the components the
runner drives, in start order. `__main__` runs it; tests (chat's and the gateway's) start the
same components in-process:

    chat = ChatApp(settings, grpc_host="127.0.0.1", grpc_port=0)
    for component in chat.components(events=False):
        await component.start()
    target = chat.grpc.address          # "127.0.0.1:<bound port>" (chat.grpc_port: the port)
"""

from __future__ import annotations

import functools
from typing import cast

from fastapi import FastAPI

from aether_chat import repository
from aether_chat.archive import MessageArchive, OnDemandBucket
from aether_chat.batching import SendBatcher
from aether_chat.cache import ChatCache
from aether_chat.config import ChatSettings
from aether_chat.consumers import UserEventsConsumer
from aether_chat.db import Database, UnitOfWork
from aether_chat.events import ChatEvents, topic_specs
from aether_chat.grpc import SERVICE_NAME, ChatServicer, register
from aether_chat.metrics import TRANSACTION_RETRIES
from aether_chat.realtime import Fanout
from aether_chat.retention import RetentionJob
from aether_chat.service import ChatService
from aether_common.auth_jwks import verifying_server
from aether_common.events import EventProducer, MongoOutboxRelay, RelayOptions, outbox_mongo
from aether_common.http import create_http_app
from aether_common.lifecycle import Component
from aether_common.mongo import MongoDatabase
from aether_common.redis_component import RedisComponent


class ChatApp:
    def __init__(
        self, settings: ChatSettings, *, grpc_host: str = "0.0.0.0", grpc_port: int | None = None
    ) -> None:
        s = self.settings = settings
        self.redis = RedisComponent(s.redis_url, timeout_s=s.redis_timeout_s)
        self.cache = ChatCache(self.redis.client, prefix=s.redis_prefix, ttl_s=s.cache_ttl_s)
        self.fanout = Fanout(self.redis.client, self.cache, fanout_prefix=s.fanout_prefix)
        self.database: Database = MongoDatabase(
            s.mongo_url,
            s.mongo_database,
            service="chat",
            unit_of_work=functools.partial(UnitOfWork, fanout=self.fanout),
            indexes=(repository.ensure_indexes, outbox_mongo.ensure_indexes),
            pool_size=s.mongo_pool_size,
            attempts=s.transaction_attempts,
            on_retry=TRANSACTION_RETRIES.inc,
        )
        self.service = ChatService(
            settings=s,
            database=self.database,
            cache=self.cache,
            fanout=self.fanout,
            events=ChatEvents(s.topic_prefix),
        )
        port = s.grpc_port if grpc_port is None else grpc_port
        self.auth, self.grpc = verifying_server(
            "chat", s, host=grpc_host, port=port, delegating_services=s.delegating_services
        )
        self.sends = SendBatcher(self.database, self.service, max_batch=s.send_batch_max)
        # Retention: archive to S3, then delete (archive.py); the bucket is needed by that only.
        # (from_settings builds the class it is called on.)
        bucket = cast(OnDemandBucket, OnDemandBucket.from_settings(s, service="chat"))
        self.archive_bucket = bucket
        self.archive = MessageArchive(
            self.database.reader,
            bucket,
            self.cache,
            retention_days=s.message_retention_days,
            delete_batch=s.archive_delete_batch,
        )
        servicer = ChatServicer(self.service, self.database, self.sends, self.archive)
        self.grpc.add_service(register, servicer, SERVICE_NAME)
        self.producer = EventProducer(s.kafka_bootstrap, client_id="aether-chat")
        self.relay = MongoOutboxRelay(
            self.database.db,
            self.producer,
            topics=topic_specs(s.topic_prefix),
            options=RelayOptions(active_poll_s=s.outbox_poll_s, poll_interval=s.outbox_idle_poll_s),
        )
        # This replica's own events go out at once (other replicas' wait for a poll).
        self.database.on_events = self.relay.wake
        self.consumer = UserEventsConsumer(
            self.database,
            self.service,
            bootstrap=s.kafka_bootstrap,
            group_id=s.topic_prefix + s.consumer_group,
            topic_prefix=s.topic_prefix,
        )
        self.retention = RetentionJob(self.archive, interval_s=s.retention_interval_s)

    @property
    def grpc_port(self) -> int:
        """The bound gRPC port (the real one when built with grpc_port=0), once started."""
        return self.grpc.port

    def components(self, *, events: bool = True, consume: bool | None = None) -> list[Component]:
        """Start order (the runner stops them in reverse: gRPC first, the clients last).
        `events=False` leaves events in the outbox and consumes nothing (no Kafka needed);
        `consume` (default: `events`) runs the user.deleted consumer (it joins its consumer
        group in the background, which takes seconds on the local broker)."""
        consume = events if consume is None else consume
        kafka: list[Component] = [self.producer, self.relay] if events else []
        if consume:
            kafka.append(self.consumer)
        return [
            self.database,
            self.redis,
            self.archive_bucket,  # starts nothing; stopping it closes its S3 client
            self.auth,
            *kafka,
            self.retention,
            self.grpc,
        ]

    def http_app(self) -> FastAPI:
        return create_http_app("chat")
