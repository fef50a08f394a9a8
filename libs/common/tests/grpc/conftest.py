"""A real ProbeService on a real socket (port 0), its servicer's observations, and a span sink."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aether.testing.v1 import probe_pb2, probe_pb2_grpc
from aether_common import errors
from aether_common.grpc import GrpcServer, create_channel, create_server
from aether_common.identity import (
    CallerIdentity,
    IdentityResolver,
    current_identity,
)
from aether_common.logging import request_id_var
from aether_common.telemetry import configure_telemetry
from aether_devstack.testkit.trusted_headers import TrustedHeadersResolver

PROBE = probe_pb2.DESCRIPTOR.services_by_name["ProbeService"].full_name
STREAM_SERVICE = "aether.testing.v1.StreamProbe"
COUNT_METHOD = f"/{STREAM_SERVICE}/Count"


@dataclass
class Observations:
    """What the servicer saw, for the tests to check."""

    attempts: Counter[str] = field(default_factory=Counter)
    request_ids: list[str | None] = field(default_factory=list)
    identities: list[CallerIdentity] = field(default_factory=list)
    sleep_started: asyncio.Event = field(default_factory=asyncio.Event)
    sleeps_finished: int = 0


class ProbeServicer(probe_pb2_grpc.ProbeServiceServicer):
    def __init__(self, seen: Observations) -> None:
        self.seen = seen

    def _observe(self, method: str) -> None:
        self.seen.attempts[method] += 1
        self.seen.request_ids.append(request_id_var.get())
        self.seen.identities.append(current_identity())

    async def Echo(self, request: probe_pb2.EchoRequest, context: Any) -> probe_pb2.EchoResponse:
        self._observe("Echo")
        # "flaky:N": UNAVAILABLE for the first N attempts, then success.
        flaky, _, failures = request.message.partition(":")
        if flaky == "flaky" and self.seen.attempts["Echo"] <= int(failures):
            raise errors.Unavailable("warming up")
        trace_id = trace.get_current_span().get_span_context().trace_id
        return probe_pb2.EchoResponse(
            message=request.message,
            caller_user_id=current_identity().user_id or "",
            trace_id=format(trace_id, "032x"),
        )

    async def Fail(self, request: probe_pb2.FailRequest, context: Any) -> probe_pb2.FailResponse:
        self._observe("Fail")
        raise _failure(request.code, request.detail)

    async def Sleep(self, request: probe_pb2.SleepRequest, context: Any) -> probe_pb2.SleepResponse:
        self._observe("Sleep")
        self.seen.sleep_started.set()
        await asyncio.sleep(request.milliseconds / 1000)
        self.seen.sleeps_finished += 1
        return probe_pb2.SleepResponse()

    # A server-streaming method, registered by hand (the probe proto has none).
    async def Count(
        self, request: probe_pb2.EchoRequest, context: Any
    ) -> AsyncIterator[probe_pb2.EchoResponse]:
        self._observe("Count")
        count, _, fail = request.message.partition(":")
        for i in range(int(count)):
            yield probe_pb2.EchoResponse(message=str(i))
        if fail:
            raise _failure(fail, "stream broke")


def _failure(code: str, detail: str) -> Exception:
    if code == "validation":
        return errors.ValidationFailed(detail, field_errors={"email": "must contain @"})
    if code == "rate_limited":
        return errors.RateLimited(detail, retry_after=1.5)
    if code == "needs_admin":  # a servicer's own check of its caller, as callers.py do
        identity = current_identity()
        if not identity.is_authenticated:
            return errors.Unauthenticated("authentication required")
        if not identity.has_permission("admin:write"):
            return errors.Forbidden(
                "missing permission: admin:write", metadata={"missing": "admin:write"}
            )
        return errors.Conflict(detail)  # an admin gets past the check and meets the failure
    if code == "crash":
        return RuntimeError(detail)  # an unexpected bug, message must not leak
    return errors.error_for_code(code)(detail)


def register_count(servicer: ProbeServicer, server: grpc.aio.Server) -> None:
    handler = grpc.unary_stream_rpc_method_handler(
        servicer.Count,
        request_deserializer=probe_pb2.EchoRequest.FromString,
        response_serializer=probe_pb2.EchoResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(STREAM_SERVICE, {"Count": handler})]
    )


ServerFactory = Callable[..., Any]


@pytest.fixture
def seen() -> Observations:
    return Observations()


@pytest.fixture
async def start_server(seen: Observations) -> AsyncIterator[ServerFactory]:
    """Start a probe server with any create_server() options; stopped after the test."""
    started: list[GrpcServer] = []

    async def start(resolver: IdentityResolver | None = None, **options: Any) -> GrpcServer:
        server = create_server(
            "probe", host="127.0.0.1", port=0, identity_resolver=resolver, **options
        )
        servicer = ProbeServicer(seen)
        server.add_service(probe_pb2_grpc.add_ProbeServiceServicer_to_server, servicer, PROBE)
        server.add_service(register_count, servicer, STREAM_SERVICE)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(grace=0)


@pytest.fixture
async def server(start_server: ServerFactory) -> GrpcServer:
    """Callers' x-aether-* headers are believed (TrustedHeadersResolver): tests only."""
    result: GrpcServer = await start_server(TrustedHeadersResolver())
    return result


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with create_channel(
        server.address, idempotent_methods=[f"{PROBE}/Echo"], default_timeout=5
    ) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> probe_pb2_grpc.ProbeServiceAsyncStub:
    return probe_pb2_grpc.ProbeServiceStub(channel)


@pytest.fixture(scope="session")
def span_sink() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_telemetry("aether-test", span_exporter=exporter)
    return exporter


@pytest.fixture
def spans(span_sink: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    span_sink.clear()
    yield span_sink
    span_sink.clear()
