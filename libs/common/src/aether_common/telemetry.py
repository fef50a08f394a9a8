"""OpenTelemetry for a service process: tracer/meter providers, W3C propagation, instrumentation.

`configure_telemetry()` installs the global providers once per process: spans are batched to an
OTLP collector when an endpoint is configured, and dropped otherwise (they still give log lines
their trace and span ids). Later calls return the same providers and may add span exporters,
which is how tests attach an `InMemorySpanExporter`.

Context crosses process boundaries as W3C `traceparent`/`tracestate` (+ `baggage`): in HTTP
headers (FastAPI's native telemetry, `http_telemetry`), gRPC metadata (the interceptors below)
and Kafka record headers (`inject_headers` / `extract_context`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from fastapi.telemetry import TelemetryConfig
from opentelemetry import metrics, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aether_common.logging import get_logger

# Probes and scrapes every few seconds would drown the real traces.
EXCLUDED_HTTP_PATHS = ("/healthz", "/readyz", "/metrics")
EXCLUDED_GRPC_SERVICE_PREFIXES = ("grpc.health.", "grpc.reflection.")

log = get_logger(__name__)


@dataclass
class Telemetry:
    """The process's providers, as installed globally by `configure_telemetry`."""

    service_name: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    otlp_endpoint: str | None = None
    _span_exporters: list[SpanExporter] = field(default_factory=list)

    def add_span_exporter(self, exporter: SpanExporter, *, batch: bool = False) -> None:
        """Export every span also to `exporter` (synchronously unless `batch`); idempotent."""
        if any(existing is exporter for existing in self._span_exporters):
            return
        self._span_exporters.append(exporter)
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.tracer_provider.add_span_processor(processor)


_lock = threading.Lock()
_state: Telemetry | None = None


def configure_telemetry(
    service_name: str,
    otlp_endpoint: str | None = None,
    *,
    service_version: str | None = None,
    environment: str | None = None,
    span_exporter: SpanExporter | None = None,
    otlp_insecure: bool = True,
    metric_export_interval_s: float = 60.0,
) -> Telemetry:
    """Install the global tracer and meter providers (first call) and W3C propagation.

    Safe to call again: the first call's resource and metric export stay; a later call may add
    `span_exporter` and, if none was set before, OTLP span export.
    """
    global _state
    with _lock:
        if _state is None:
            _state = _install(
                service_name,
                otlp_endpoint,
                service_version,
                environment,
                otlp_insecure,
                metric_export_interval_s,
            )
        elif service_name != _state.service_name:
            log.warning(
                "telemetry.already_configured",
                service=_state.service_name,
                ignored_service=service_name,
            )
        state = _state
        if otlp_endpoint and state.otlp_endpoint is None:
            state.otlp_endpoint = otlp_endpoint
            state.add_span_exporter(_otlp_span_exporter(otlp_endpoint, otlp_insecure), batch=True)
        if span_exporter is not None:
            state.add_span_exporter(span_exporter)
        return state


def _install(
    service_name: str,
    otlp_endpoint: str | None,
    service_version: str | None,
    environment: str | None,
    otlp_insecure: bool,
    metric_export_interval_s: float,
) -> Telemetry:
    attributes: dict[str, str] = {"service.name": service_name, "service.namespace": "aether"}
    if service_version:
        attributes["service.version"] = service_version
    if environment:
        attributes["deployment.environment.name"] = environment
    resource = Resource.create(attributes)

    tracer_provider = TracerProvider(resource=resource)
    trace.set_tracer_provider(tracer_provider)
    installed = trace.get_tracer_provider()
    if installed is not tracer_provider and isinstance(installed, TracerProvider):
        # Someone set an SDK provider before us (a test harness): add to it rather than lose spans.
        tracer_provider = installed

    readers: list[MetricReader] = []
    if otlp_endpoint:
        readers.append(
            PeriodicExportingMetricReader(
                _otlp_metric_exporter(otlp_endpoint, otlp_insecure),
                export_interval_millis=metric_export_interval_s * 1000,
            )
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(meter_provider)

    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    state = Telemetry(service_name, tracer_provider, meter_provider)
    if otlp_endpoint:
        state.otlp_endpoint = otlp_endpoint
        state.add_span_exporter(_otlp_span_exporter(otlp_endpoint, otlp_insecure), batch=True)
    log.info("telemetry.configured", service=service_name, otlp_endpoint=otlp_endpoint)
    return state


def _otlp_span_exporter(endpoint: str, insecure: bool) -> SpanExporter:
    # Imported lazily: the exporter pulls in a gRPC client that only OTLP users need.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, insecure=insecure)


def _otlp_metric_exporter(endpoint: str, insecure: bool) -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=endpoint, insecure=insecure)


def shutdown_telemetry() -> None:
    """Flush pending spans and metrics (call on process exit; telemetry stays off afterwards)."""
    with _lock:
        state = _state
    if state is None:
        return
    state.tracer_provider.force_flush()
    state.tracer_provider.shutdown()
    state.meter_provider.shutdown()


# -- HTTP -------------------------------------------------------------------------------------
def http_telemetry() -> TelemetryConfig:
    """FastAPI's native OpenTelemetry (`FastAPI(telemetry=...)`): a server span per request,
    W3C context extracted from the headers, none for health, readiness and metrics.

    Operation spans (one per dependency, endpoint and serialisation) and OTel HTTP metrics are
    off: a span per request is what a trace needs, and the RED metrics are Prometheus's
    (metrics.py). Works before `configure_telemetry` too: the global providers resolve later.
    """
    return {
        "operation_spans": False,
        "metrics": False,
        "exclude": lambda scope: scope.get("path") in EXCLUDED_HTTP_PATHS,
    }


# -- gRPC -------------------------------------------------------------------------------------
def _traced(details: Any) -> bool:
    method = getattr(details, "method", b"")
    if isinstance(method, bytes):  # grpc.aio client details carry bytes (grpc/grpc#31092)
        method = method.decode()
    service = str(method).lstrip("/").partition("/")[0]
    return not service.startswith(EXCLUDED_GRPC_SERVICE_PREFIXES)


def grpc_server_interceptor() -> grpc.aio.ServerInterceptor[Any, Any]:
    """The OpenTelemetry grpc.aio server interceptor: continues the caller's trace."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    interceptor: grpc.aio.ServerInterceptor[Any, Any] = aio_server_interceptor(  # type: ignore[no-untyped-call]
        filter_=_traced
    )
    return interceptor


def grpc_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The OpenTelemetry grpc.aio client interceptors (one per call kind): client spans and
    `traceparent` in the outgoing metadata."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(  # type: ignore[no-untyped-call]
        filter_=_traced
    )
    return interceptors


# -- Kafka (and any other header carrier) ------------------------------------------------------
def inject_headers(
    headers: list[tuple[str, bytes]] | None = None,
) -> list[tuple[str, bytes]]:
    """Kafka record headers with the current trace context added (`traceparent`, ...)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    result = [(k, v) for k, v in headers or () if k not in carrier]
    result.extend((key, value.encode()) for key, value in carrier.items())
    return result


def extract_context(headers: Iterable[tuple[str, bytes | None]] | None) -> Context:
    """The trace context carried by Kafka record headers (empty context when none)."""
    carrier = {
        key.lower(): value.decode(errors="replace")
        for key, value in headers or ()
        if value is not None
    }
    return propagate.extract(carrier)
