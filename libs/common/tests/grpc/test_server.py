"""The gRPC server over a real socket: health, reflection, error mapping, streaming, stop."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
import structlog
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from aether.testing.v1 import probe_pb2, probe_pb2_grpc
from aether_common import errors
from aether_common.grpc import GrpcServer, create_channel

PROBE = "aether.testing.v1.ProbeService"
COUNT_METHOD = "/aether.testing.v1.StreamProbe/Count"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _check(channel: grpc.aio.Channel, service: str) -> Any:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service)
    )
    return reply.status


async def test_health_is_serving_then_not_serving_when_set(
    server: GrpcServer, channel: grpc.aio.Channel
) -> None:
    assert await _check(channel, "") == SERVING
    assert await _check(channel, PROBE) == SERVING

    await server.set_serving(PROBE, False)

    assert await _check(channel, PROBE) == NOT_SERVING
    assert await _check(channel, "") == SERVING


async def test_stop_turns_health_not_serving_before_closing(start_server: Any) -> None:
    server: GrpcServer = await start_server(drain_delay=0.5)
    async with create_channel(server.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        updates = aiter(watch)
        assert (await anext(updates)).status == SERVING

        stopping = asyncio.create_task(server.stop(grace=1))
        assert (await anext(updates)).status == NOT_SERVING
        # During the drain delay the server still answers, and says it is going away.
        assert await _check(channel, PROBE) == NOT_SERVING
        assert not await server.ready()
        await stopping


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    async def requests() -> Any:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = [reply async for reply in stub.ServerReflectionInfo(requests())]

    names = {s.name for s in replies[0].list_services_response.service}
    assert {PROBE, "grpc.health.v1.Health"} <= names


async def test_domain_error_reaches_the_client_with_status_and_details(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Fail(probe_pb2.FailRequest(code="not_found", detail="no such room"))

    exc = caught.value
    assert exc.code() is grpc.StatusCode.NOT_FOUND
    assert exc.details() == "no such room"
    # grpc_status is typed for sync calls only; an aio error carries the same trailing metadata.
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("not_found", "aether.probe")

    typed = errors.from_grpc_error(exc)
    assert isinstance(typed, errors.NotFound)
    assert typed.detail == "no such room"
    assert typed.http_body() == {
        "error": "not_found",
        "detail": "no such room",
        "status_code": 404,
    }


async def test_field_errors_and_retry_info_survive_the_trip(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.Fail(probe_pb2.FailRequest(code="validation", detail="bad signup"))
    typed = errors.from_grpc_error(bad.value)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(typed, errors.ValidationFailed)
    assert typed.field_errors == {"email": "must contain @"}

    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await stub.Fail(probe_pb2.FailRequest(code="rate_limited", detail="slow down"))
    typed = errors.from_grpc_error(limited.value)
    assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert isinstance(typed, errors.RateLimited)
    assert typed.retry_after == 1.5


async def test_unexpected_exception_is_internal_and_does_not_leak(stub: Any) -> None:
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Fail(probe_pb2.FailRequest(code="crash", detail="db password is hunter2"))

    exc = caught.value
    assert exc.code() is grpc.StatusCode.INTERNAL
    assert exc.details() == "internal error"
    assert "hunter2" not in str(exc.trailing_metadata())
    assert isinstance(errors.from_grpc_error(exc), errors.InternalError)
    logged = [entry for entry in logs if entry["event"] == "grpc.unhandled_error"]
    assert logged
    assert logged[0]["exc_info"] is True  # the traceback goes to the log, not the client


async def test_server_streaming_goes_through_the_same_interceptors(
    channel: grpc.aio.Channel, seen: Any
) -> None:
    count = channel.unary_stream(
        COUNT_METHOD,
        request_serializer=probe_pb2.EchoRequest.SerializeToString,
        response_deserializer=probe_pb2.EchoResponse.FromString,
    )
    got = [r.message async for r in count(probe_pb2.EchoRequest(message="3"))]
    assert got == ["0", "1", "2"]

    received: list[str] = []

    async def read_broken_stream() -> None:
        async for reply in count(probe_pb2.EchoRequest(message="2:not_found")):
            received.append(reply.message)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_broken_stream()
    assert received == ["0", "1"]
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert errors.from_grpc_error(caught.value).detail == "stream broke"
    assert seen.request_ids[-1]  # the request context is bound for streams too


async def test_graceful_stop_lets_an_in_flight_call_finish(start_server: Any, seen: Any) -> None:
    server: GrpcServer = await start_server()
    async with create_channel(server.address) as channel:
        stub: Any = probe_pb2_grpc.ProbeServiceStub(channel)
        in_flight = asyncio.ensure_future(stub.Sleep(probe_pb2.SleepRequest(milliseconds=300)))
        await asyncio.wait_for(seen.sleep_started.wait(), 5)

        await server.stop(grace=5)

        assert await in_flight == probe_pb2.SleepResponse()
        assert seen.sleeps_finished == 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Echo(probe_pb2.EchoRequest(message="late"), timeout=1)
        assert caught.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )


async def test_calls_are_counted_per_method_and_code(stub: Any) -> None:
    method = f"/{PROBE}/Fail"

    def handled(side: str) -> float:
        value = REGISTRY.get_sample_value(
            f"aether_grpc_{side}_handled_total", {"method": method, "code": "NOT_FOUND"}
        )
        return value or 0.0

    before = handled("server"), handled("client")
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Fail(probe_pb2.FailRequest(code="not_found", detail="x"))
    assert (handled("server"), handled("client")) == (before[0] + 1, before[1] + 1)
