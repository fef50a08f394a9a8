"""The client channel against a real server: deadlines, retries, context, typed errors."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import grpc
import pytest

from aether.testing.v1 import probe_pb2, probe_pb2_grpc
from aether_common import errors
from aether_common.grpc import GrpcServer, RetryPolicy, checked, create_channel, rpc_errors
from aether_common.grpc.client import method_selector, service_config
from aether_common.identity import (
    ANONYMOUS,
    CallerIdentity,
    use_identity,
)
from aether_common.logging import request_id_var
from aether_devstack.testkit.trusted_headers import TrustedHeadersResolver

PROBE = "aether.testing.v1.ProbeService"
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05)
ALICE = CallerIdentity(
    user_id="u-alice",
    roles=frozenset({"premium"}),
    permissions=frozenset({"chat:write", "alerts:read"}),
    plan="premium",
    access_token="header.payload.signature",
)


def _stub(channel: grpc.aio.Channel) -> Any:
    return probe_pb2_grpc.ProbeServiceStub(channel)


# -- deadlines ---------------------------------------------------------------------------------
async def test_deadline_exceeded_surfaces_as_timeout(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Sleep(probe_pb2.SleepRequest(milliseconds=2000), timeout=0.1)

    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    typed = errors.from_grpc_error(caught.value)
    assert isinstance(typed, errors.Timeout)
    assert typed.http_status == 504


async def test_a_call_without_a_deadline_gets_the_default(server: GrpcServer) -> None:
    async with create_channel(server.address, default_timeout=0.2) as channel:
        started = time.monotonic()
        with pytest.raises(errors.Timeout):
            await checked(_stub(channel).Sleep(probe_pb2.SleepRequest(milliseconds=3000)))
        assert time.monotonic() - started < 2


# -- retries -----------------------------------------------------------------------------------
async def test_idempotent_method_is_retried_on_unavailable(server: GrpcServer, seen: Any) -> None:
    async with create_channel(
        server.address, idempotent_methods=[f"{PROBE}/Echo"], retry=FAST_RETRY
    ) as channel:
        reply = await _stub(channel).Echo(probe_pb2.EchoRequest(message="flaky:2"))

    assert reply.message == "flaky:2"
    assert seen.attempts["Echo"] == 3


async def test_retries_stop_at_max_attempts(server: GrpcServer, seen: Any) -> None:
    async with create_channel(
        server.address,
        idempotent_methods=[PROBE],
        retry=FAST_RETRY,  # the whole service
    ) as channel:
        with pytest.raises(errors.Unavailable):
            await checked(_stub(channel).Fail(probe_pb2.FailRequest(code="unavailable")))

    assert seen.attempts["Fail"] == 3


async def test_non_idempotent_method_is_not_retried(server: GrpcServer, seen: Any) -> None:
    async with create_channel(
        server.address, idempotent_methods=[f"{PROBE}/Echo"], retry=FAST_RETRY
    ) as channel:
        with pytest.raises(errors.Unavailable):
            await checked(_stub(channel).Fail(probe_pb2.FailRequest(code="unavailable")))

    assert seen.attempts["Fail"] == 1


def test_service_config_names_only_the_idempotent_methods() -> None:
    config = json.loads(service_config([f"{PROBE}/Echo", "/aether.chat.v1.Chat/Get"], FAST_RETRY))

    (method_config,) = config["methodConfig"]
    assert method_config["name"] == [
        {"service": PROBE, "method": "Echo"},
        {"service": "aether.chat.v1.Chat", "method": "Get"},
    ]
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert method_config["retryPolicy"]["maxAttempts"] == 3
    assert method_config["retryPolicy"]["initialBackoff"] == "0.010000s"
    assert "methodConfig" not in json.loads(service_config([], FAST_RETRY))


@pytest.mark.parametrize("bad", ["Echo", "ProbeService/Echo", f"{PROBE}/Echo/x", ""])
def test_a_malformed_method_name_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="idempotent method"):
        method_selector(bad)


# -- propagated context ------------------------------------------------------------------------
async def test_caller_identity_and_request_id_propagate(stub: Any, seen: Any) -> None:
    token = request_id_var.set("req-123")
    try:
        with use_identity(ALICE):
            reply = await stub.Echo(probe_pb2.EchoRequest(message="hi"))
    finally:
        request_id_var.reset(token)

    assert reply.caller_user_id == "u-alice"
    assert seen.request_ids[-1] == "req-123"
    assert seen.identities[-1] == ALICE  # roles, permissions, plan and the token itself


async def test_server_makes_a_request_id_when_none_came(stub: Any, seen: Any) -> None:
    await stub.Echo(probe_pb2.EchoRequest(message="hi"))
    assert seen.request_ids[-1]
    assert seen.identities[-1] == ANONYMOUS


async def test_default_resolver_does_not_believe_identity_headers(
    start_server: Any, seen: Any
) -> None:
    server: GrpcServer = await start_server()  # no resolver configured
    async with create_channel(server.address) as channel:
        with use_identity(ALICE):
            reply = await _stub(channel).Echo(probe_pb2.EchoRequest(message="hi"))
        forged = await _stub(channel).Echo(
            probe_pb2.EchoRequest(message="hi"),
            metadata=[("x-aether-user-id", "admin"), ("x-aether-permissions", "admin:write")],
        )

    assert reply.caller_user_id == ""
    assert forged.caller_user_id == ""
    assert seen.identities[-1] == ANONYMOUS


async def test_permission_checks_in_a_servicer_map_to_grpc_codes(stub: Any) -> None:
    with pytest.raises(errors.Unauthenticated):
        await checked(stub.Fail(probe_pb2.FailRequest(code="needs_admin")))
    with use_identity(ALICE), pytest.raises(errors.Forbidden) as caught:
        await checked(stub.Fail(probe_pb2.FailRequest(code="needs_admin")))
    assert caught.value.metadata == {"missing": "admin:write"}


class RefusingResolver:
    """Stands in for a JWT verifier: a bad token is refused before the servicer runs."""

    async def resolve(self, metadata: Mapping[str, str]) -> CallerIdentity:
        if metadata.get("authorization") == "Bearer expired":
            raise errors.Unauthenticated("token expired")
        return await TrustedHeadersResolver().resolve(metadata)


async def test_a_resolver_refusing_the_caller_gives_unauthenticated(
    start_server: Any, seen: Any
) -> None:
    server: GrpcServer = await start_server(RefusingResolver())
    async with create_channel(server.address) as channel:
        with pytest.raises(errors.Unauthenticated, match="token expired"):
            await checked(
                _stub(channel).Echo(
                    probe_pb2.EchoRequest(message="hi"),
                    metadata=[("authorization", "Bearer expired")],
                )
            )
    assert seen.attempts["Echo"] == 0


class BrokenResolver:
    async def resolve(self, metadata: Mapping[str, str]) -> CallerIdentity:
        raise RuntimeError("jwks fetch failed: secret-url")


async def test_a_crashing_resolver_gives_a_generic_internal_error(start_server: Any) -> None:
    server: GrpcServer = await start_server(BrokenResolver())
    async with create_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _stub(channel).Echo(probe_pb2.EchoRequest(message="hi"))
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"


@pytest.mark.parametrize("attempts", [1, 6])
def test_an_invalid_retry_policy_is_refused(attempts: int) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=attempts)


# -- typed errors ------------------------------------------------------------------------------
async def test_rpc_errors_raises_the_typed_error_and_keeps_the_cause(stub: Any) -> None:
    with pytest.raises(errors.Conflict) as caught, rpc_errors():
        await stub.Fail(probe_pb2.FailRequest(code="conflict", detail="room exists"))

    assert caught.value.detail == "room exists"
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
