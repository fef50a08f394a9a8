"""Wiring: every object of the service built once from its settings, and the components the
runner drives, in start order. `__main__` runs it; tests start the same components in-process.
"""

from __future__ import annotations

from datetime import timedelta
from importlib.resources import files

from fastapi import FastAPI

from aether_auth import api
from aether_auth.callers import AccessTokenResolver
from aether_auth.challenges import MfaChallenges
from aether_auth.config import AuthSettings
from aether_auth.crypto import new_box
from aether_auth.emails import AccountEmails
from aether_auth.events import UserEvents, topic_specs
from aether_auth.grpc import SERVICE_NAME, AuthServicer, register
from aether_auth.housekeeping import Housekeeper
from aether_auth.keys import KeyRing
from aether_auth.oidc import OAuthStates, OidcProviders
from aether_auth.passwords import Passwords
from aether_auth.revocation import RevocationList
from aether_auth.service import AuthService
from aether_auth.service_clients import ServiceClients
from aether_auth.sessions import Sessions
from aether_auth.throttle import Cooldown, LoginThrottle
from aether_auth.tokens import AccessTokens
from aether_common.delegation import DelegatingResolver
from aether_common.events import EventProducer, PgOutboxRelay
from aether_common.grpc import GrpcServer, create_server
from aether_common.http import create_http_app
from aether_common.lifecycle import Component
from aether_common.postgres import PostgresDatabase
from aether_common.redis_component import RedisComponent


class AuthApp:
    def __init__(
        self, settings: AuthSettings, *, grpc_host: str = "0.0.0.0", grpc_port: int | None = None
    ) -> None:
        s = self.settings = settings
        self.database = PostgresDatabase(
            s.database_url, service="auth", migrations=files("aether_auth") / "migrations"
        )
        self.redis = RedisComponent(s.redis_url, timeout_s=2.0, decode_responses=True)
        redis = self.redis.client
        self.box = new_box(s.key_encryption_secret.get_secret_value())
        # A retired key verifies for the longest lifetime of a token it signed.
        longest_ttl_s = max(s.access_token_ttl_s, s.service_token_ttl_s)
        self.keys = KeyRing(self.database, self.box, timedelta(seconds=longest_ttl_s))
        self.tokens = AccessTokens(
            self.keys, issuer=s.issuer, audience=s.audience, ttl_s=s.access_token_ttl_s
        )
        self.revocations = RevocationList(redis, s.redis_prefix, s.access_token_ttl_s)
        self.sessions = Sessions(self.tokens, self.revocations, refresh_ttl_s=s.refresh_token_ttl_s)
        self.passwords = Passwords(
            time_cost=s.argon2_time_cost,
            memory_kib=s.argon2_memory_kib,
            workers=s.password_hash_workers,
        )
        self.providers = OidcProviders(s.oauth_providers, timeout_s=s.oauth_http_timeout_s)
        self.service = AuthService(
            settings=s,
            passwords=self.passwords,
            sessions=self.sessions,
            throttle=LoginThrottle(
                redis,
                s.redis_prefix,
                threshold=s.lockout_threshold,
                window_s=s.lockout_window_s,
                lock_s=s.lockout_duration_s,
                ip_limit=s.ip_failure_limit,
                ip_window_s=s.ip_window_s,
            ),
            cooldown=Cooldown(redis, s.redis_prefix),
            challenges=MfaChallenges(
                redis,
                s.redis_prefix,
                ttl_s=s.mfa_challenge_ttl_s,
                max_attempts=s.mfa_challenge_attempts,
            ),
            emails=AccountEmails.from_settings(s),
            box=self.box,
            providers=self.providers,
            oauth_states=OAuthStates(redis, s.redis_prefix, s.oauth_state_ttl_s),
            events=UserEvents(s.topic_prefix),
        )
        self.service_clients = ServiceClients(
            s.service_clients,
            self.tokens,
            LoginThrottle(
                redis,
                s.redis_prefix + "svc:",
                threshold=s.service_failure_limit,
                window_s=s.service_failure_window_s,
                lock_s=s.service_failure_window_s,
                ip_limit=1,  # unused: no client IP for services
                ip_window_s=1,
            ),
            environment=s.environment,
            ttl_s=s.service_token_ttl_s,
        )
        self.grpc: GrpcServer = create_server(
            "auth",
            host=grpc_host,
            port=s.grpc_port if grpc_port is None else grpc_port,
            # A listed service acting for a user passes here; callers.py lets it through on
            # ExportMyData only.
            identity_resolver=DelegatingResolver(
                AccessTokenResolver(self.tokens, self.revocations), s.delegating_services
            ),
        )
        self.grpc.add_service(
            register,
            AuthServicer(self.service, self.database, self.keys, self.service_clients),
            SERVICE_NAME,
        )
        self.producer = EventProducer(s.kafka_bootstrap, client_id="aether-auth")
        self.relay = PgOutboxRelay(
            s.database_url, self.producer, topics=topic_specs(s.topic_prefix)
        )
        rotation = s.key_rotation_interval_s
        self.housekeeper = Housekeeper(
            self.database,
            self.keys,
            interval_s=s.housekeeping_interval_s,
            rotation_interval=timedelta(seconds=rotation) if rotation else None,
            login_history_retention=timedelta(days=s.login_history_retention_days),
        )

    def components(self, *, events: bool = True) -> list[Component]:
        """Start order (the runner stops them in reverse: gRPC first, the pool last).
        `events=False` leaves events in the outbox (tests that need no broker)."""
        relay: list[Component] = [self.producer, self.relay] if events else []
        return [
            self.database,
            self.redis,
            self.keys,
            self.passwords,
            self.providers,
            *relay,
            self.housekeeper,
            self.grpc,
        ]

    def http_app(self) -> FastAPI:
        app = create_http_app("auth", routers=[api.router])
        app.state.auth_keys = self.keys
        return app
