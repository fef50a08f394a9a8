"""Wiring: every object of the service built once from its settings, and the components the
runner drives, in start order. `__main__` runs it; tests start the same components in-process:

    charts = ChartsApp(settings, grpc_host="127.0.0.1", grpc_port=0)
    for component in charts.components():
        await component.start()
    target = charts.grpc.address        # "127.0.0.1:<bound port>"
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI

from aether_charts import market_events
from aether_charts.archive import Archiver
from aether_charts.archive_reader import ArchiveReader
from aether_charts.cache import ResponseCache
from aether_charts.config import ChartsSettings
from aether_charts.datasets import BUNDLED, BundledLoader, Dataset
from aether_charts.feed import FeedConsumer
from aether_charts.grpc import SERVICE_NAME, ChartsServicer, register
from aether_charts.render import Renderer
from aether_charts.replay import Replayer
from aether_charts.service import ChartsService
from aether_charts.stream import StreamPublisher
from aether_common.auth_jwks import verifying_server
from aether_common.events import EventProducer, PgOutboxRelay, RelayOptions
from aether_common.http import create_http_app
from aether_common.lifecycle import Component
from aether_common.postgres import PostgresDatabase
from aether_common.s3 import S3Bucket


class ChartsApp:
    def __init__(
        self,
        settings: ChartsSettings,
        *,
        grpc_host: str = "0.0.0.0",
        grpc_port: int | None = None,
        datasets: tuple[Dataset, ...] = BUNDLED,
    ) -> None:
        s = self.settings = settings
        self.database = PostgresDatabase(
            s.database_url,
            service="charts",
            migrations=files("aether_charts") / "migrations",
            max_size=s.database_pool_size,
        )
        self.bucket = S3Bucket.from_settings(s, service="charts")
        self.renderer = Renderer(s.render_workers)
        # The archive of bars beyond retention (archive.py): its own bucket, same S3 server.
        archive = s.model_copy(update={"s3_bucket": s.archive_bucket})
        self.archive_bucket = S3Bucket.from_settings(archive, service="charts")
        self.archiver = Archiver(
            self.database,
            self.archive_bucket,
            retention_years=s.retention_years,
            interval_s=s.archive_interval_s,
        )
        reader = ArchiveReader(self.archive_bucket, cache_rows=s.archive_cache_rows)
        self.service = ChartsService(s, reader)
        self.loader = BundledLoader(self.database, datasets)
        port = s.grpc_port if grpc_port is None else grpc_port
        self.auth, self.grpc = verifying_server("charts", s, host=grpc_host, port=port)
        self.cache = (
            ResponseCache(
                s.redis_url,
                prefix=s.cache_prefix,
                ttl_s=s.cache_ttl_s,
                l1_entries=s.cache_l1_entries,
                timeout_s=s.cache_timeout_s,
            )
            if s.cache_enabled
            else None
        )
        servicer = ChartsServicer(
            self.service, self.database, self.bucket, self.renderer, self.cache
        )
        self.grpc.add_service(register, servicer, SERVICE_NAME)
        # The live feed: the outbox relay publishes what the replayer and the feed consumer
        # write; the consumer stores real ticks and publishes every frame to Redis.
        self.producer = EventProducer(s.kafka_bootstrap, client_id="aether-charts")
        self.relay = PgOutboxRelay(
            s.database_url,
            self.producer,
            topics=market_events.topic_specs(s.topic_prefix),
            options=RelayOptions(active_poll_s=s.outbox_poll_s),
        )
        self.stream = StreamPublisher(s.redis_url, prefix=s.stream_prefix)
        self.feed = FeedConsumer(
            self.database,
            self.stream,
            bootstrap=s.kafka_bootstrap,
            group_id=s.topic_prefix + s.consumer_group,
            topic_prefix=s.topic_prefix,
            resolution=s.feed_resolution,
        )
        self.replayer = Replayer(
            self.database,
            symbols=s.replay_symbols,
            bar_seconds=s.replay_bar_s,
            topic_prefix=s.topic_prefix,
        )

    def components(self, *, events: bool = True) -> list[Component]:
        """Start order (the runner stops them in reverse). The bundled history loads in the
        background once the database is migrated: gRPC serves meanwhile. `events=False`
        leaves out Kafka, Redis and the replay (the read paths need none of them)."""
        s = self.settings
        load: list[Component] = [self.loader] if s.load_bundled else []
        feed: list[Component] = []
        if events:
            feed = [self.producer, self.relay, self.stream, self.feed]
            if s.replay_enabled:
                feed.append(self.replayer)
        archive: list[Component] = [self.archive_bucket, self.archiver]
        cache: list[Component] = [self.cache] if self.cache is not None else []
        return [
            self.database,
            self.bucket,
            *archive,
            self.renderer,
            *load,
            self.auth,
            *cache,
            *feed,
            self.grpc,
        ]

    def http_app(self) -> FastAPI:
        return create_http_app("charts")
