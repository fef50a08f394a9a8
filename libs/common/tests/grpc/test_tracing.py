"""One trace spans both sides of a gRPC call."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from aether.testing.v1 import probe_pb2

ECHO = "/aether.testing.v1.ProbeService/Echo"


async def _spans_of(sink: InMemorySpanExporter, kinds: set[SpanKind]) -> list[ReadableSpan]:
    # The client span ends in a done-callback, the server span as the handler returns: wait.
    for _ in range(100):
        found = [s for s in sink.get_finished_spans() if s.name == ECHO and s.kind in kinds]
        if {s.kind for s in found} >= kinds:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"spans never finished: {sink.get_finished_spans()}")


async def test_one_trace_id_spans_client_and_server(stub: Any, spans: InMemorySpanExporter) -> None:
    reply = await stub.Echo(probe_pb2.EchoRequest(message="hi"))

    found = await _spans_of(spans, {SpanKind.CLIENT, SpanKind.SERVER})
    client = next(s for s in found if s.kind is SpanKind.CLIENT)
    server = next(s for s in found if s.kind is SpanKind.SERVER)
    assert client.context is not None
    assert server.context is not None
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert reply.trace_id == format(client.context.trace_id, "032x")
    assert server.attributes is not None
    assert server.attributes["aether.request_id"]


async def test_a_call_joins_the_callers_current_trace(
    stub: Any, spans: InMemorySpanExporter
) -> None:
    with trace.get_tracer("test").start_as_current_span("gateway.request") as outer:
        reply = await stub.Echo(probe_pb2.EchoRequest(message="hi"))

    assert reply.trace_id == format(outer.get_span_context().trace_id, "032x")


async def test_health_checks_are_not_traced(channel: Any, spans: InMemorySpanExporter) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    await asyncio.sleep(0.05)
    assert not [s for s in spans.get_finished_spans() if "Health" in s.name]
