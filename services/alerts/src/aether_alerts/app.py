"""Wiring: every object of the service built once from its settings, and the components the
runner drives, in start order. `__main__` runs it; tests start the same components in-process:

    alerts = AlertsApp(settings, grpc_host="127.0.0.1", grpc_port=0)
    for component in alerts.components():
        await component.start()
    target = alerts.grpc.address        # "127.0.0.1:<bound port>"
"""

from __future__ import annotations

import dataclasses
from importlib.resources import files

from fastapi import FastAPI

from aether_alerts import delivery, events
from aether_alerts.channels import Email, InApp, Webhook
from aether_alerts.config import AlertsSettings
from aether_alerts.consumers import AccountConsumer
from aether_alerts.delivery import DeliveryConsumer, Dispatcher
from aether_alerts.engine import AlertEngine
from aether_alerts.engine_indicators import ChartsReadings
from aether_alerts.expiry import Expiry
from aether_alerts.grpc import SERVICE_NAME, AlertsServicer, register
from aether_alerts.market import SymbolCheck
from aether_alerts.service import AlertsService
from aether_common.auth_jwks import verifying_server
from aether_common.events import ConsumerOptions, EventProducer, PgOutboxRelay, RelayOptions
from aether_common.http import create_http_app
from aether_common.lifecycle import Component
from aether_common.mailer import Mailer, SmtpServer
from aether_common.postgres import PostgresDatabase, jsonb_as_objects
from aether_common.redis_component import RedisComponent
from aether_common.service_tokens import ServiceCredentials


class AlertsApp:
    def __init__(
        self, settings: AlertsSettings, *, grpc_host: str = "0.0.0.0", grpc_port: int | None = None
    ) -> None:
        s = self.settings = settings
        self.database = PostgresDatabase(
            s.database_url,
            service="alerts",
            migrations=files("aether_alerts") / "migrations",
            max_size=s.database_pool_size,
            init=jsonb_as_objects,
        )
        self.symbols = SymbolCheck(s.charts_grpc_target, timeout_s=s.charts_timeout_s)
        self.service = AlertsService(s, self.symbols)
        port = s.grpc_port if grpc_port is None else grpc_port
        self.auth, self.grpc = verifying_server(
            "alerts", s, host=grpc_host, port=port, delegating_services=s.delegating_services
        )
        self.grpc.add_service(register, AlertsServicer(self.service, self.database), SERVICE_NAME)
        # Rule changes and firings leave through the outbox (published once committed).
        self.producer = EventProducer(s.kafka_bootstrap, client_id="aether-alerts")
        self.relay = PgOutboxRelay(
            s.database_url,
            self.producer,
            topics=events.topic_specs(s.topic_prefix),
            options=RelayOptions(active_poll_s=s.outbox_poll_s),
        )
        self.expiry = Expiry(
            self.database, self.service, interval_s=s.expiry_interval_s, batch=s.expiry_batch
        )
        self.consumer = AccountConsumer(
            self.database,
            self.service,
            bootstrap=s.kafka_bootstrap,
            group_id=s.topic_prefix + s.consumer_group,
            topic_prefix=s.topic_prefix,
        )

        # The engine: its own consumer group on the market ticks and bar closes (engine.py).
        # Indicator rules read charts' values as this service: its own token from auth.
        secret = s.auth_client_secret
        self.credentials = (
            None
            if secret is None
            else ServiceCredentials(
                s.auth_grpc_target, s.auth_client_id, secret, timeout_s=s.auth_timeout_s
            )
        )
        self.readings = (
            None
            if self.credentials is None
            else ChartsReadings(
                s.charts_grpc_target, timeout_s=s.charts_timeout_s, token=self.credentials.token
            )
        )
        self.engine = AlertEngine(
            self.database,
            bootstrap=s.kafka_bootstrap,
            group_id=s.topic_prefix + s.consumer_group + "-engine",
            topic_prefix=s.topic_prefix,
            options=ConsumerOptions(fetch_max_wait_ms=s.fetch_max_wait_ms),
            readings=self.readings,
        )

        # Delivery (delivery.py): the consumer records what to deliver, the dispatcher sends it.
        self.redis = RedisComponent(s.redis_url, timeout_s=s.redis_timeout_s)
        smtp = SmtpServer(
            s.smtp_host,
            s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password,
            starttls=s.smtp_starttls,
            tls=s.smtp_tls,
            timeout_s=s.smtp_timeout_s,
        )
        self.dispatcher = Dispatcher(
            self.database,
            s,
            in_app=InApp(self.redis.client, s.notify_prefix),
            email=Email(Mailer(smtp, sender=s.mail_from), self.database, s),
            webhook=Webhook(self.database, s),
        )
        self.delivery = DeliveryConsumer(
            self.database,
            bootstrap=s.kafka_bootstrap,
            group_id=s.topic_prefix + s.consumer_group + "-delivery",
            topic_prefix=s.topic_prefix,
            options=dataclasses.replace(
                delivery.DEFAULT_OPTIONS, fetch_max_wait_ms=s.fetch_max_wait_ms
            ),
        )

    def components(self, *, events: bool = True) -> list[Component]:
        """Start order (the runner stops them in reverse: gRPC first). `events=False` publishes
        and consumes nothing (the outbox fills; no Kafka needed)."""
        kafka: list[Component] = (
            [self.producer, self.relay, self.consumer, self.engine, self.delivery] if events else []
        )
        identity: list[Component] = (
            [self.credentials, self.readings]
            if self.credentials is not None and self.readings is not None
            else []
        )
        return [
            self.database,
            self.redis,
            self.auth,
            self.symbols,
            *identity,
            self.expiry,
            self.dispatcher,
            *kafka,
            self.grpc,
        ]

    def http_app(self) -> FastAPI:
        return create_http_app("alerts")
