"""OpenTelemetry for a service process: tracer/meter providers, W3C propagation, instrumentation.

`configure_telemetry()` installs the global providers once per process. Tracing is on when
something receives the spans: an OTLP endpoint (spans batched to the collector) or a span
exporter added later (how tests attach an `InMemorySpanExporter`); then log lines carry trace
and span ids too. With neither, no tracer provider is installed and no span is made: on the
gateway a span per request cost more CPU than the rest of a cached request, for traces nobody
would receive (the request id still joins the logs of every service a request crossed).

Context crosses process boundaries as W3C `traceparent`/`tracestate` (+ `baggage`): in HTTP
headers (FastAPI's native telemetry, `http_telemetry`), gRPC metadata (aether_common.grpc's
interceptors) and Kafka record headers (`inject_headers` / `extract_context`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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

log = get_logger(__name__)


@dataclass
class Telemetry:
    """The process's providers, as installed globally by `configure_telemetry`."""

    service_name: str
    resource: Resource
    meter_provider: MeterProvider
    # Installed with the first span exporter (None: tracing is off).
    tracer_provider: TracerProvider | None = None
    otlp_endpoint: str | None = None
    _span_exporters: list[SpanExporter] = field(default_factory=list)

    def add_span_exporter(self, exporter: SpanExporter, *, batch: bool = False) -> None:
        """Export every span also to `exporter` (synchronously unless `batch`); idempotent.
        The first one turns tracing on."""
        if any(existing is exporter for existing in self._span_exporters):
            return
        self._span_exporters.append(exporter)
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self._tracing().add_span_processor(processor)

    def _tracing(self) -> TracerProvider:
        if self.tracer_provider is None:
            provider = TracerProvider(resource=self.resource)
            trace.set_tracer_provider(provider)
            installed = trace.get_tracer_provider()
            if installed is not provider and isinstance(installed, TracerProvider):
                # Someone set an SDK provider before us (a test harness): add to it.
                provider = installed
            self.tracer_provider = provider
        return self.tracer_provider


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
    """Install the meter provider and W3C propagation (first call), and the tracer provider
    once spans have somewhere to go (`otlp_endpoint` or `span_exporter`).

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
    state = Telemetry(service_name, resource, meter_provider)
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
    if state.tracer_provider is not None:
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
