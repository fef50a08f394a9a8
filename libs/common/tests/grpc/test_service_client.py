"""ServiceClient against a real probe server: typed stub, deadlines, typed errors, readiness."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from prometheus_client import REGISTRY

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether.testing.v1 import probe_pb2, probe_pb2_grpc
from aether_common import errors
from aether_common.grpc import GrpcServer, Peer, PeerNotImplemented, ServiceClient
from aether_common.identity import CallerIdentity, use_identity
from aether_common.logging import request_id_var
from aether_devstack.testkit.trusted_headers import TrustedHeadersResolver

if TYPE_CHECKING:
    from aether.testing.v1.probe_pb2_grpc import ProbeServiceAsyncStub

PROBE_SERVICE = probe_pb2.DESCRIPTOR.services_by_name["ProbeService"]
PROBE = Peer("probe", PROBE_SERVICE, probe_pb2_grpc.ProbeServiceStub)
PROBE_ECHO_RETRIED = Peer("probe", PROBE_SERVICE, probe_pb2_grpc.ProbeServiceStub, ("Echo",))
COUNT_METHOD = "/aether.testing.v1.StreamProbe/Count"  # registered by hand in conftest.py
Factory = Callable[..., ServiceClient[Any]]


@pytest.fixture
async def client_for() -> AsyncIterator[Factory]:
    """Started ServiceClients of the probe service (stopped after the test)."""
    made: list[ServiceClient[Any]] = []

    def make(
        target: str, peer: Peer[ProbeServiceAsyncStub] = PROBE, **options: Any
    ) -> ServiceClient[ProbeServiceAsyncStub]:
        options.setdefault("timeout_s", 5.0)
        client = ServiceClient(peer, target, **options)
        client.open()
        made.append(client)
        return client

    yield make
    for client in made:
        await client.stop()


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def test_calls_go_through_the_typed_stub(server: GrpcServer, client_for: Factory) -> None:
    client = client_for(server.address)

    reply = await client.call(client.stub.Echo, probe_pb2.EchoRequest(message="hi"))

    assert isinstance(reply, probe_pb2.EchoResponse)
    assert reply.message == "hi"


async def test_the_stub_exists_only_while_started(server: GrpcServer) -> None:
    client = ServiceClient(PROBE, server.address, timeout_s=1)
    with pytest.raises(RuntimeError, match="probe channel not started"):
        _ = client.stub
    await client.start()
    assert client.stub is not None
    await client.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = client.stub


# -- deadlines ---------------------------------------------------------------------------------
async def test_a_call_gets_the_default_deadline(server: GrpcServer, client_for: Factory) -> None:
    client = client_for(server.address, timeout_s=0.2)

    started = time.monotonic()
    with pytest.raises(errors.Timeout, match="the probe service did not answer in time"):
        await client.call(client.stub.Sleep, probe_pb2.SleepRequest(milliseconds=3000))
    assert time.monotonic() - started < 2


async def test_a_call_may_set_its_own_deadline(server: GrpcServer, client_for: Factory) -> None:
    client = client_for(server.address, timeout_s=0.1)

    await client.call(client.stub.Sleep, probe_pb2.SleepRequest(milliseconds=300), deadline_s=5)
    with pytest.raises(errors.Timeout):
        await client.call(
            client.stub.Sleep, probe_pb2.SleepRequest(milliseconds=3000), deadline_s=0.2
        )


# -- typed errors ------------------------------------------------------------------------------
async def test_an_unreachable_peer_is_unavailable_with_retry_after(client_for: Factory) -> None:
    client = client_for(_closed_port())

    with pytest.raises(errors.Unavailable, match="the probe service is unavailable") as caught:
        await client.call(client.stub.Echo, probe_pb2.EchoRequest(message="hi"))

    assert caught.value.retry_after == 1
    assert caught.value.http_headers() == {"Retry-After": "1"}


async def test_the_peers_own_errors_keep_their_type_and_words(
    server: GrpcServer, client_for: Factory, seen: Any
) -> None:
    client = client_for(server.address, PROBE_ECHO_RETRIED)

    with pytest.raises(errors.NotFound, match="no such room"):
        await client.call(
            client.stub.Fail, probe_pb2.FailRequest(code="not_found", detail="no such room")
        )
    with pytest.raises(errors.Unavailable, match="down for maintenance") as caught:
        await client.call(
            client.stub.Fail,
            probe_pb2.FailRequest(code="unavailable", detail="down for maintenance"),
        )
    assert caught.value.retry_after is None  # the peer's error, not a transport failure
    assert seen.attempts["Fail"] == 2  # not idempotent: never retried


async def test_idempotent_methods_are_retried(
    server: GrpcServer, client_for: Factory, seen: Any
) -> None:
    client = client_for(server.address, PROBE_ECHO_RETRIED)

    reply = await client.call(client.stub.Echo, probe_pb2.EchoRequest(message="flaky:2"))

    assert reply.message == "flaky:2"
    assert seen.attempts["Echo"] == 3


def test_an_unknown_idempotent_method_is_refused() -> None:
    with pytest.raises(ValueError, match="has no method Ecko"):
        Peer("probe", PROBE_SERVICE, probe_pb2_grpc.ProbeServiceStub, idempotent=("Ecko",))


async def test_a_method_the_peer_lacks_is_not_implemented(server: GrpcServer) -> None:
    service = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
    auth = ServiceClient(
        Peer("auth", service, auth_pb2_grpc.AuthServiceStub), server.address, timeout_s=5
    )
    await auth.start()
    try:
        with pytest.raises(PeerNotImplemented, match="auth service does not support") as caught:
            await auth.call(auth.stub.GetJwks, auth_pb2.GetJwksRequest())
        assert caught.value.http_status == 501
        assert not await auth.ready()  # the probe server does not serve AuthService
    finally:
        await auth.stop()


# -- the caller's token ------------------------------------------------------------------------
class RecordingResolver:
    def __init__(self) -> None:
        self.authorization: list[str | None] = []

    async def resolve(self, metadata: Mapping[str, str]) -> CallerIdentity:
        self.authorization.append(metadata.get("authorization"))
        return await TrustedHeadersResolver().resolve(metadata)


async def test_a_token_is_sent_as_a_bearer(start_server: Any, client_for: Factory) -> None:
    resolver = RecordingResolver()
    server: GrpcServer = await start_server(resolver)
    client = client_for(server.address)

    await client.call(client.stub.Echo, probe_pb2.EchoRequest(message="a"), token="t0k3n")
    await client.call(client.stub.Echo, probe_pb2.EchoRequest(message="b"))

    assert resolver.authorization == ["Bearer t0k3n", None]


async def test_the_served_callers_identity_and_request_id_go_along(
    server: GrpcServer, client_for: Factory, seen: Any
) -> None:
    alice = CallerIdentity(
        user_id="u-alice", roles=frozenset({"premium"}), plan="premium", access_token="a.b.c"
    )
    client = client_for(server.address)
    token = request_id_var.set("req-42")
    try:
        with use_identity(alice):
            reply = await client.call(client.stub.Echo, probe_pb2.EchoRequest(message="hi"))
    finally:
        request_id_var.reset(token)

    assert reply.caller_user_id == "u-alice"
    assert seen.request_ids[-1] == "req-42"
    assert seen.identities[-1] == alice


async def test_each_call_is_counted_under_its_method_and_outcome(
    server: GrpcServer, client_for: Factory
) -> None:
    client = client_for(server.address)
    echo, fail = "/aether.testing.v1.ProbeService/Echo", "/aether.testing.v1.ProbeService/Fail"

    def count(method: str, code: str) -> float:
        labels = {"method": method, "code": code}
        return REGISTRY.get_sample_value("aether_grpc_client_handled_total", labels) or 0.0

    before = count(echo, "OK"), count(fail, "NOT_FOUND")
    await client.call(client.stub.Echo, probe_pb2.EchoRequest(message="hi"))
    with pytest.raises(errors.NotFound):
        await client.call(client.stub.Fail, probe_pb2.FailRequest(code="not_found"))

    assert (count(echo, "OK"), count(fail, "NOT_FOUND")) == (before[0] + 1, before[1] + 1)


# -- streams -----------------------------------------------------------------------------------
def _count_stub(channel: grpc.aio.Channel) -> Any:
    return channel.unary_stream(
        COUNT_METHOD,
        request_serializer=probe_pb2.EchoRequest.SerializeToString,
        response_deserializer=probe_pb2.EchoResponse.FromString,
    )


async def test_a_stream_yields_then_raises_the_typed_error(server: GrpcServer) -> None:
    counter = ServiceClient(Peer("probe", PROBE_SERVICE, _count_stub), server.address, timeout_s=5)
    await counter.start()
    got: list[str] = []

    async def read(message: str) -> None:
        async for reply in counter.stream(counter.stub, probe_pb2.EchoRequest(message=message)):
            got.append(reply.message)

    try:
        with pytest.raises(errors.Forbidden, match="stream broke"):
            await read("3:forbidden")
    finally:
        await counter.stop()
    assert got == ["0", "1", "2"]


# -- readiness ---------------------------------------------------------------------------------
async def test_ready_follows_the_peers_health(start_server: Any, client_for: Factory) -> None:
    server: GrpcServer = await start_server()
    client = client_for(server.address)
    assert await client.ready()
    await server.set_serving(PROBE_SERVICE.full_name, False)
    assert not await client.ready()  # its own service's status, not the server's
    await server.set_serving(PROBE_SERVICE.full_name, True)
    assert await client.ready()

    await server.stop(grace=0)

    assert not await client.ready()  # never raises


async def test_ready_is_false_when_the_peer_was_never_up(client_for: Factory) -> None:
    started = time.monotonic()
    assert not await client_for(_closed_port()).ready()
    assert time.monotonic() - started < 2


async def test_a_client_that_does_without_its_peer_is_ready_once_open(
    client_for: Factory,
) -> None:
    client = client_for(_closed_port(), needs_peer=False)
    assert await client.ready()
    assert not await client.healthy()
    await client.stop()
    assert not await client.ready()
