"""The auth service in-process on a free gRPC port, against the session's real servers
(PostgreSQL, Redis, Kafka, SMTP from the devstack plugin) and a local OIDC provider process.

Each test gets its own database, Redis prefix and topic prefix, so tests never share state.
The `auth` fixture is the running service plus the helpers tests share (register, login, mail,
events), since test modules cannot import each other here.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from google.protobuf.message import Message as ProtoMessage

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether.events.v1.envelope_pb2 import EventEnvelope
from aether_auth.app import AuthApp
from aether_auth.config import AuthSettings, OAuthProviderSettings
from aether_common.errors import AetherError
from aether_common.events import Event, decode_event
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import AppRunner, failure, read_topic

PASSWORD = "correct horse battery staple"
OIDC_PROVIDER = "devoidc"
REDIRECT_URI = "http://127.0.0.1:8080/api/auth/oauth/devoidc/callback"
CLIENT = auth_pb2.ClientInfo(ip="203.0.113.7", user_agent="pytest")
if TYPE_CHECKING:  # only the type stubs know the async stub class
    Stub = auth_pb2_grpc.AuthServiceAsyncStub
else:
    Stub = auth_pb2_grpc.AuthServiceStub


# -- the local OIDC provider (a subprocess, like a real third party) ---------------------------
@dataclass(frozen=True)
class OidcProvider(testkit.OidcProvider):
    def settings(self, name: str = OIDC_PROVIDER) -> OAuthProviderSettings:
        return OAuthProviderSettings.model_validate(
            {
                "name": name,
                "display_name": "Dev OIDC",
                "issuer": self.issuer,
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "redirect_uris": [self.redirect_uri],
            }
        )


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    secret = "oidc-test-secret-" + secrets.token_hex(4)
    with testkit.oidc_provider_process("aether-tests", secret, REDIRECT_URI) as running:
        yield OidcProvider(**dataclasses.asdict(running))


# -- the service ---------------------------------------------------------------------------
@pytest.fixture
def auth_settings(
    pg_dsn: str,
    redis_prefix: str,
    topic_prefix: str,
    aether_endpoints: Endpoints,
    oidc_provider: OidcProvider,
) -> AuthSettings:
    return AuthSettings.model_validate(
        {
            "environment": "test",
            "database_url": pg_dsn,
            "redis_url": aether_endpoints.redis_url,
            "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
            "smtp_host": aether_endpoints.smtp_host,
            "smtp_port": aether_endpoints.smtp_port,
            "public_base_url": "https://app.aether.test",
            "key_encryption_secret": secrets.token_urlsafe(32),
            "redis_prefix": redis_prefix,
            "topic_prefix": topic_prefix,
            "oauth_providers": [oidc_provider.settings()],
            "housekeeping_interval_s": 3600,
            "password_hash_workers": 2,
            "mail_cooldown_s": 0,
        }
    )


@dataclass
class Auth:
    """The running service and the helpers tests share."""

    app: AuthApp
    stub: Stub
    settings: AuthSettings
    maildir: Path | None = None

    PASSWORD = PASSWORD
    CLIENT = CLIENT

    # -- calls -----------------------------------------------------------------------------
    async def register(self, email: str | None = None, password: str = PASSWORD) -> auth_pb2.User:
        response = await self.stub.Register(
            auth_pb2.RegisterRequest(
                email=email or unique_email(),
                password=password,
                display_name="Ada",
                client=CLIENT,
            )
        )
        return response.user

    async def login(self, email: str, password: str = PASSWORD) -> auth_pb2.LoginResponse:
        return await self.stub.Login(
            auth_pb2.LoginRequest(email=email, password=password, client=CLIENT)
        )

    async def tokens(self, email: str, password: str = PASSWORD) -> auth_pb2.TokenPair:
        response = await self.login(email, password)
        assert response.WhichOneof("result") == "tokens", response
        return response.tokens

    async def verified_user(self, email: str | None = None) -> tuple[str, auth_pb2.TokenPair]:
        """A registered user who clicked the mailed link, and fresh tokens."""
        email = email or unique_email()
        await self.register(email)
        token = link_token(self.mail(email, "Verify your email address"))
        await self.stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token))
        return email, await self.tokens(email)

    # -- mail ------------------------------------------------------------------------------
    def mail(self, to: str, subject: str, within: float = 10.0) -> Message:
        """The newest mail to `to` with `subject` that the local SMTP server stored."""
        assert self.maildir is not None, "ask for the `maildir` fixture"
        return testkit.wait_for_mail(self.maildir, to, subject, within)

    def mails(self, to: str) -> list[Message]:
        assert self.maildir is not None
        return testkit.mails_to(self.maildir, to)

    # -- the database ----------------------------------------------------------------------
    async def sql(self, query: str, *args: Any) -> list[Any]:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def events(self, topic: str, message_type: type[ProtoMessage]) -> list[Event[Any]]:
        """The events of `topic` in the outbox, in order (what the relay will publish)."""
        rows = await self.sql(
            "SELECT envelope FROM event_outbox WHERE topic = $1 ORDER BY seq",
            self.settings.topic_prefix + topic,
        )
        return [
            decode_event(EventEnvelope.FromString(row["envelope"]), message_type) for row in rows
        ]


StartAuth = Callable[..., Awaitable[Auth]]


@pytest.fixture
async def start_auth(
    auth_settings: AuthSettings, request: pytest.FixtureRequest
) -> AsyncIterator[StartAuth]:
    """Start the service (the same wiring as `python -m aether_auth`, gRPC on a free port).
    `events=True` also starts the producer and outbox relay (Kafka)."""
    runner = AppRunner()
    maildir: Path | None = (
        request.getfixturevalue("maildir") if "maildir" in request.fixturenames else None
    )

    async def start(*, events: bool = False, **overrides: Any) -> Auth:
        settings = auth_settings.model_copy(update=overrides)
        app = AuthApp(settings, grpc_host="127.0.0.1", grpc_port=0)
        await runner.start(app.components(events=events))
        stub: Stub = auth_pb2_grpc.AuthServiceStub(runner.connect(app.grpc.address, timeout=15))
        return Auth(app, stub, settings, maildir)

    yield start
    await runner.stop()


@pytest.fixture
async def auth(start_auth: StartAuth) -> Auth:
    return await start_auth()


# -- plain helpers (fixtures hand them out; test modules cannot import this file) -----------
def unique_email(prefix: str = "user") -> str:
    return f"{prefix}.{secrets.token_hex(5)}@example.com"


def link_token(message: Message) -> str:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    match = re.search(r"\?token=([A-Za-z0-9_\-]+)", body.decode())
    assert match, body
    return match.group(1)


@dataclass(frozen=True)
class Kit:
    unique_email: Callable[..., str]
    bearer: Callable[[str], tuple[tuple[str, str], ...]]
    failure: Callable[[Awaitable[Any]], Awaitable[AetherError]]
    link_token: Callable[[Message], str]
    read_topic: Callable[..., Awaitable[list[Any]]]


@pytest.fixture
def kit() -> Kit:
    return Kit(unique_email, testkit.bearer_metadata, failure, link_token, read_topic)
