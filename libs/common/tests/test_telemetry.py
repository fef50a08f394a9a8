"""Telemetry setup: idempotent configuration, HTTP spans, context in Kafka-style headers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aether_common.telemetry import (
    configure_telemetry,
    extract_context,
    http_telemetry,
    inject_headers,
)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_telemetry("aether-test", span_exporter=exporter)
    yield exporter
    exporter.clear()


def test_configuring_twice_keeps_one_global_provider(spans: InMemorySpanExporter) -> None:
    first = configure_telemetry("aether-test")
    second = configure_telemetry("aether-test")

    assert first is second
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    assert trace.get_tracer_provider() is first.tracer_provider


def test_no_tracer_provider_until_spans_have_somewhere_to_go() -> None:
    # A process of its own: the global provider can be set once per process.
    code = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import "
        "InMemorySpanExporter\n"
        "from aether_common.telemetry import configure_telemetry\n"
        "state = configure_telemetry('aether-test')\n"
        "assert state.tracer_provider is None\n"
        "assert not isinstance(trace.get_tracer_provider(), TracerProvider)\n"
        "with trace.get_tracer('t').start_as_current_span('s') as span:\n"
        "    assert not span.get_span_context().is_valid\n"
        "exporter = InMemorySpanExporter()\n"
        "configure_telemetry('aether-test', span_exporter=exporter)\n"
        "assert trace.get_tracer_provider() is state.tracer_provider\n"
        "with trace.get_tracer('t').start_as_current_span('s'):\n"
        "    pass\n"
        "assert [s.name for s in exporter.get_finished_spans()] == ['s']\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_trace_context_travels_in_record_headers(spans: InMemorySpanExporter) -> None:
    with trace.get_tracer("test").start_as_current_span("produce") as span:
        headers = inject_headers([("event-type", b"aether.chat.message_sent.v1")])

    names = [key for key, _ in headers]
    assert names[0] == "event-type"
    assert "traceparent" in names
    remote = trace.get_current_span(extract_context(headers)).get_span_context()
    assert remote.trace_id == span.get_span_context().trace_id
    assert remote.is_remote
    assert not trace.get_current_span(extract_context([])).get_span_context().is_valid


async def test_fastapi_routes_are_traced_but_probes_are_not(
    spans: InMemorySpanExporter,
) -> None:
    app = FastAPI(telemetry=http_telemetry())

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/items/7")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200

    server_spans = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    assert [s.name for s in server_spans] == ["GET /items/{item_id}"]
