"""The auth service in-process on a free gRPC port, against the session's real servers
(PostgreSQL, Redis, Kafka, SMTP from the devstack plugin) and a local OIDC provider process.

Each test gets its own database, Redis prefix and topic prefix, so tests never share state.
The `auth` fixture is the running service plus the helpers tests share (register, login, mail,
events), since test modules cannot import each other here.
"""

from __future__ import annotations

import asyncio
import mailbox
import re
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import Message as ProtoMessage

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether.events.v1.envelope_pb2 import EventEnvelope
from aether_auth.app import AuthApp
from aether_auth.config import AuthSettings, OAuthProviderSettings
from aether_common.errors import AetherError
from aether_common.events import Event, decode_event
from aether_common.grpc import checked, create_channel
from aether_common.lifecycle import Component
from aether_devstack import oidc_provider as provider
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port

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
class OidcProvider:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str

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
    port = free_port()
    client_id, secret = "aether-tests", "oidc-test-secret-" + secrets.token_hex(4)
    proc = provider.spawn(
        port, redirect_uris=[REDIRECT_URI], client_id=client_id, client_secret=secret
    )
    yield OidcProvider(f"http://127.0.0.1:{port}", client_id, secret, REDIRECT_URI)
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        deadline = time.monotonic() + within
        while True:
            box = mailbox.Maildir(self.maildir, create=False)
            found = [m for m in box if m["To"] == to and m["Subject"] == subject]
            if found:
                return found[-1]
            assert time.monotonic() < deadline, f"no mail {subject!r} to {to}"
            time.sleep(0.05)

    def mails(self, to: str) -> list[Message]:
        assert self.maildir is not None
        return [m for m in mailbox.Maildir(self.maildir, create=False) if m["To"] == to]

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
    started: list[tuple[list[Component], grpc.aio.Channel | None]] = []
    maildir: Path | None = (
        request.getfixturevalue("maildir") if "maildir" in request.fixturenames else None
    )

    async def start(*, events: bool = False, **overrides: Any) -> Auth:
        settings = auth_settings.model_copy(update=overrides)
        app = AuthApp(settings, grpc_host="127.0.0.1", grpc_port=0)
        components: list[Component] = []
        entry: tuple[list[Component], grpc.aio.Channel | None] = (components, None)
        started.append(entry)
        for component in app.components(events=events):
            await component.start()
            components.append(component)
        channel = create_channel(app.grpc.address, default_timeout=15)
        started[-1] = (components, channel)
        stub: Stub = auth_pb2_grpc.AuthServiceStub(channel)
        return Auth(app, stub, settings, maildir)

    yield start
    for components, channel in reversed(started):
        if channel is not None:
            await channel.close(grace=None)
        for component in reversed(components):
            await component.stop()


@pytest.fixture
async def auth(start_auth: StartAuth) -> Auth:
    return await start_auth()


# -- plain helpers (fixtures hand them out; test modules cannot import this file) -----------
def unique_email(prefix: str = "user") -> str:
    return f"{prefix}.{secrets.token_hex(5)}@example.com"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def failure(call: Awaitable[Any]) -> AetherError:
    """The typed error a call failed with (rebuilt from its gRPC status and details)."""
    try:
        await checked(call)
    except AetherError as exc:
        return exc
    raise AssertionError("the call succeeded")


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


async def read_topic(bootstrap: str, topic: str, count: int, within: float = 20.0) -> list[Any]:
    """Records of `topic` from the beginning, with a real consumer, until `count` arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        deadline = time.monotonic() + within
        partitions = None
        while not partitions:
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            if topic in await consumer.topics():
                partitions = consumer.partitions_for_topic(topic)
            else:
                await asyncio.sleep(0.05)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        while len(records) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"got {len(records)} of {count} records from {topic}"
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.2) * 1000))
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


@pytest.fixture
def kit() -> Kit:
    return Kit(unique_email, bearer, failure, link_token, read_topic)
