"""The shared test kit: what every service's tests need and would otherwise copy.

Typed helpers, used by the devstack pytest plugin's fixtures and by the suites' conftests:
- keys and tokens: `SigningKey`, `new_key`, `access_claims`, `mint` (what auth issues);
- an auth peer serving a JWKS over real gRPC (`serve_jwks`), the way services fetch keys;
- scripted gRPC peers (`ScriptedPeer`, `serve`) for a caller's own tests;
- in-process apps: `AppRunner` starts an app's components in order and stops them all;
- typed errors of gRPC calls (`failure`, `stream_failure`), Kafka topics (`read_topic`),
  polling (`eventually`), mail in the local SMTP Maildir (`mails_to`, `wait_for_mail`);
- datastores: a fresh PostgreSQL database (`fresh_database`), a Redis prefix wiped
  (`delete_prefix`);
- processes: the local OIDC provider (`oidc_provider_process`) and a platform service
  (re)started from its fleet's spec (`start_fleet_process`).
Test modules cannot import conftest.py (importlib mode); they can import this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import io
import json
import mailbox
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email.message import Message as Mail
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether_common.errors import AetherError
from aether_common.grpc import GrpcServer, checked, create_channel, create_server
from aether_common.identity import metadata_to_dict
from aether_common.lifecycle import Component
from aether_devstack import oidc_provider as provider
from aether_devstack.catalog import ServiceSpec, service_argv, service_env
from aether_devstack.cli import ServiceProcess, Terminal
from aether_devstack.servers import free_port

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from aether_devstack.fleet import Fleet

# What auth puts in `iss` and `aud` by default (the services' defaults too).
ISSUER = "aether-auth"
AUDIENCE = "aether"
TOKEN_TTL_S = 900
ServicerT = TypeVar("ServicerT")


# -- keys and tokens -------------------------------------------------------------------------
@dataclass(frozen=True)
class SigningKey:
    """A key pair as auth holds it: the private key signs, `jwk` is what the JWKS publishes."""

    kid: str
    alg: str
    private: Ed25519PrivateKey | rsa.RSAPrivateKey
    jwk: dict[str, Any]


def ed25519_key(kid: str | None = None) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = kid or f"ed-{uuid.uuid4().hex[:8]}"
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    return SigningKey(kid, "EdDSA", private, jwk | {"kid": kid, "alg": "EdDSA", "use": "sig"})


def rsa_key(kid: str | None = None) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = kid or f"rsa-{uuid.uuid4().hex[:8]}"
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return SigningKey(kid, "RS256", private, jwk | {"kid": kid, "alg": "RS256", "use": "sig"})


def new_key(alg: str = "EdDSA", kid: str | None = None) -> SigningKey:
    """A fresh key pair: `EdDSA` (what auth signs with) or `RS256`."""
    return ed25519_key(kid) if alg == "EdDSA" else rsa_key(kid)


def access_claims(
    *, issuer: str = ISSUER, audience: str = AUDIENCE, **overrides: Any
) -> dict[str, Any]:
    """The claims of an access token as auth issues them (a free user with a random `sub`);
    an override of None drops that claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": f"user-{uuid.uuid4().hex[:10]}",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + TOKEN_TTL_S,
        "iss": issuer,
        "aud": audience,
        "plan": "free",
        "roles": ["user"],
        "perms": [],
        "sid": uuid.uuid4().hex,
    }
    return {k: v for k, v in (base | overrides).items() if v is not None}


def mint(
    key: SigningKey, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None
) -> str:
    """`claims` signed with `key`, with the headers auth sets (`kid`, `typ: at+jwt`)."""
    return jwt.encode(
        dict(claims),
        key.private,
        algorithm=key.alg,
        headers={"kid": key.kid, "typ": "at+jwt", **(headers or {})},
    )


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying `token`."""
    return (("authorization", f"Bearer {token}"),)


# -- the auth peer: a JWKS over real gRPC ------------------------------------------------------
@dataclass
class JwksPeer:
    """An AuthService that serves `jwks` (tests may change it) and counts the fetches."""

    jwks: list[dict[str, Any]]
    address: str = ""
    jwks_calls: int = 0


class _JwksServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, peer: JwksPeer) -> None:
        self._peer = peer

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> auth_pb2.GetJwksResponse:
        self._peer.jwks_calls += 1
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps({"keys": self._peer.jwks}))


@asynccontextmanager
async def serve_jwks(*keys: SigningKey) -> AsyncIterator[JwksPeer]:
    """A real gRPC server on a free port (the shared `create_server`, so a service fetches and
    verifies keys exactly as it will against auth); GetJwks is its only RPC."""
    peer = JwksPeer(jwks=[key.jwk for key in keys])
    async with serve(
        "auth",
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        _JwksServicer(peer),  # type: ignore[abstract]  # GetJwks is all a service calls
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    ) as address:
        peer.address = address
        yield peer


# -- scripted gRPC peers -------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One RPC a peer received: its method, request and call metadata."""

    method: str
    request: Any
    metadata: dict[str, str]


Script = Message | AetherError | Callable[[Any], Any]


@dataclass
class ScriptedPeer:
    """A gRPC peer for a caller's own tests (edge cases a real service cannot be made to give).

    Each RPC is recorded in `calls` and answers `answers[method]`: a message, an AetherError to
    fail with, or a function of the request (sync or async); an unscripted RPC answers an empty
    response. A call the client cancelled lands in `cancelled`. Subclasses may answer some
    methods themselves (`answer`) and stream others (`streaming`, `stream`)."""

    service: ServiceDescriptor
    answers: dict[str, Script] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    cancelled_event: asyncio.Event = field(default_factory=asyncio.Event)
    address: str = ""
    streaming: frozenset[str] = frozenset()

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_cancelled(self) -> list[str]:
        async with asyncio.timeout(5.0):
            await self.cancelled_event.wait()
        return self.cancelled

    def empty_response(self, method: str) -> Message:
        output = self.service.methods_by_name[method].output_type
        response: Message = GetMessageClass(output)()
        return response

    async def answer(self, method: str, request: Any) -> Message:
        scripted = self.answers.get(method)
        if isinstance(scripted, AetherError):
            raise scripted
        if isinstance(scripted, Message):
            return scripted
        if scripted is not None:
            result = scripted(request)
            answer: Message = await result if inspect.isawaitable(result) else result
            return answer
        return self.empty_response(method)

    def stream(self, method: str, request: Any) -> AsyncIterator[Any]:
        raise NotImplementedError(f"{type(self).__name__} streams no {method}")

    @contextmanager
    def recording_cancel(self, method: str) -> Iterator[None]:
        try:
            yield
        except asyncio.CancelledError:
            self.cancelled.append(method)
            self.cancelled_event.set()
            raise

    def servicer(self, base: Callable[[], ServicerT]) -> ServicerT:
        """An instance of the generated servicer `base` whose every method answers from here."""

        def unary(name: str) -> Callable[..., Awaitable[Message]]:
            async def method(
                _: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> Message:
                self.calls.append(Call(name, request, _metadata(context)))
                with self.recording_cancel(name):
                    return await self.answer(name, request)

            return method

        def streaming(name: str) -> Callable[..., AsyncIterator[Any]]:
            async def method(
                _: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                self.calls.append(Call(name, request, _metadata(context)))
                with self.recording_cancel(name):
                    async for item in self.stream(name, request):
                        yield item

            return method

        methods = {
            name: streaming(name) if name in self.streaming else unary(name)
            for name in self.service.methods_by_name
        }
        generated = cast(type, base)  # the generated servicer class (abstract for mypy)
        servicer: ServicerT = type(f"Scripted{generated.__name__}", (generated,), methods)()
        return servicer


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return metadata_to_dict(context.invocation_metadata())


@asynccontextmanager
async def serve(
    name: str,
    add_to_server: Callable[[Any, grpc.aio.Server], None],
    servicer: object,
    service: ServiceDescriptor,
) -> AsyncIterator[str]:
    """`servicer` on a real socket (the shared `create_server`, so errors cross the wire exactly
    as the real service's will); yields its address."""
    server: GrpcServer = create_server(name, host="127.0.0.1", port=0)
    server.add_service(add_to_server, servicer, service)
    await server.start()
    try:
        yield server.address
    finally:
        await server.stop(grace=0)


# -- apps started in-process ---------------------------------------------------------------------
@dataclass
class _Started:
    components: list[Component] = field(default_factory=list)
    channel: grpc.aio.Channel | None = None
    before_stop: Callable[[list[Component]], Awaitable[None]] | None = None


class AppRunner:
    """Starts apps the way their `__main__` does (components in order) and stops every one,
    newest first: its channel closed, its `before_stop` hook run, its components stopped in
    reverse. A component that failed to start is not stopped; the ones before it are."""

    def __init__(self) -> None:
        self._apps: list[_Started] = []

    async def start(
        self,
        components: Iterable[Component],
        *,
        before_stop: Callable[[list[Component]], Awaitable[None]] | None = None,
    ) -> None:
        """Start `components` in order; `before_stop(those started)` runs before they stop."""
        started = _Started(before_stop=before_stop)
        self._apps.append(started)
        for component in components:
            await component.start()
            started.components.append(component)

    def connect(self, address: str, *, timeout: float) -> grpc.aio.Channel:
        """A channel to the app started last, closed when it stops."""
        channel = create_channel(address, default_timeout=timeout)
        self._apps[-1].channel = channel
        return channel

    async def stop(self) -> None:
        while self._apps:
            app = self._apps.pop()
            if app.channel is not None:
                await app.channel.close(grace=None)
            if app.before_stop is not None:
                await app.before_stop(app.components)
            for component in reversed(app.components):
                await component.stop()


# -- calls, topics, conditions -------------------------------------------------------------------
async def failure(call: Awaitable[Any]) -> AetherError:
    """The typed error a call failed with (rebuilt from its gRPC status and details)."""
    try:
        await checked(call)
    except AetherError as exc:
        return exc
    raise AssertionError("the call succeeded")


async def _drain(call: Any) -> list[Any]:
    return [event async for event in call]


async def stream_failure(call: Any) -> AetherError:
    """The typed error a streaming call failed with (after any events it sent)."""
    return await failure(_drain(call))


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float = 10.0) -> None:
    """Wait until `check()` (sync or async) holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


async def read_topic(bootstrap: str, topic: str, count: int, within: float = 20.0) -> list[Any]:
    """Records of `topic` from the beginning, with a real consumer, until `count` arrived."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

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


# -- mail ----------------------------------------------------------------------------------------
def mails_to(maildir: Path, to: str, subject: str | None = None) -> list[Mail]:
    """The mails to `to` (with `subject`, if given) that the local SMTP server stored, in order."""
    box = mailbox.Maildir(maildir, create=False)
    return [m for m in box if m["To"] == to and (subject is None or m["Subject"] == subject)]


def latest_mail(maildir: Path, to: str, subject: str) -> Mail | None:
    """The newest mail to `to` with `subject`, if any."""
    found = mails_to(maildir, to, subject)
    return found[-1] if found else None


def wait_for_mail(maildir: Path, to: str, subject: str, within: float = 10.0) -> Mail:
    deadline = time.monotonic() + within
    while (mail := latest_mail(maildir, to, subject)) is None:
        assert time.monotonic() < deadline, f"no mail {subject!r} to {to} in {within} s"
        time.sleep(0.05)
    return mail


async def await_mail(maildir: Path, to: str, subject: str, within: float = 10.0) -> Mail:
    """`wait_for_mail` without blocking the event loop."""
    deadline = time.monotonic() + within
    while (mail := latest_mail(maildir, to, subject)) is None:
        assert time.monotonic() < deadline, f"no mail {subject!r} to {to} in {within} s"
        await asyncio.sleep(0.05)
    return mail


# -- datastores ----------------------------------------------------------------------------------
def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def fresh_database(admin_dsn: str, prefix: str = "aether_t_") -> AsyncIterator[str]:
    """A new, empty PostgreSQL database on the server of `admin_dsn`, dropped afterwards."""
    import asyncpg

    name = unique_name(prefix)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = admin_dsn.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def delete_prefix(redis: Redis, prefix: str) -> None:
    """Delete every key under `prefix` (what a test wrote under its own prefix)."""
    keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis.delete(*keys)


# -- processes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OidcProvider:
    """The local OIDC provider (a subprocess, like a real third party) and its one client."""

    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str


@contextmanager
def oidc_provider_process(
    client_id: str, client_secret: str, redirect_uri: str
) -> Iterator[OidcProvider]:
    port = free_port()
    proc = provider.spawn(
        port, redirect_uris=[redirect_uri], client_id=client_id, client_secret=client_secret
    )
    try:
        yield OidcProvider(f"http://127.0.0.1:{port}", client_id, client_secret, redirect_uri)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fleet_env(fleet: Fleet, spec: ServiceSpec) -> dict[str, str]:
    """The environment the fleet gives `spec`'s service (the suite's extra env included)."""
    env = service_env(spec, fleet.specs, fleet.endpoints, fleet.root)
    return env | dict(fleet.extra_env.get(spec.name, {}))


def start_fleet_process(
    fleet: Fleet, process: ServiceProcess, *, within: float, env: Mapping[str, str] = {}
) -> None:
    """Start `process` with its fleet's environment (plus `env`) and wait for its /healthz."""
    spec = process.spec
    argv = service_argv(spec, fleet.endpoints, fleet.root)
    process.start(argv, fleet_env(fleet, spec) | dict(env), Terminal(io.StringIO(), 1))
    process.wait_healthy(within)


def replica_spec(fleet: Fleet, name: str) -> ServiceSpec:
    """`name`'s spec on a new free HTTP port: a second replica of a running service."""
    return dataclasses.replace(fleet.spec(name), http_port=free_port())
