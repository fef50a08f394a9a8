"""Event <-> Kafka headers and EventEnvelope, and the trace context they carry (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from aether.testing.v1.probe_pb2 import EchoRequest, ProbeEvent
from aether_common.events import (
    Event,
    MalformedEvent,
    decode_event,
    envelope_from_record,
    envelope_headers,
)


def sample() -> Event[ProbeEvent]:
    return Event(
        type="aether.testing.probed.v1",
        subject="entity-7",
        source="tests",
        payload=ProbeEvent(entity_id="entity-7", sequence=3, body="hi"),
        time=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    )


def test_headers_follow_the_envelope_contract() -> None:
    event = sample()
    headers = dict(envelope_headers(event.to_envelope()))
    assert headers == {
        "ce_id": event.id.encode(),
        "ce_type": b"aether.testing.probed.v1",
        "ce_source": b"tests",
        "ce_time": b"2025-01-02T03:04:05.678901Z",
        "ce_subject": b"entity-7",
        "ce_dataschema": b"aether.testing.v1.ProbeEvent",
    }


def test_round_trip_through_a_record() -> None:
    event = sample()
    envelope = event.to_envelope()
    back = decode_event(envelope_from_record(envelope_headers(envelope), envelope.data), ProbeEvent)
    assert back == event


def test_trace_context_travels_with_the_event() -> None:
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("request") as span:
        event = sample()  # created inside the request: captures its trace
    envelope = event.to_envelope()
    headers = envelope_headers(envelope)
    assert dict(headers)["traceparent"].startswith(b"00-")
    back = decode_event(envelope_from_record(headers, envelope.data), ProbeEvent)
    parent = trace.get_current_span(back.trace_context()).get_span_context()
    assert parent.trace_id == span.get_span_context().trace_id
    assert parent.span_id == span.get_span_context().span_id


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h: h.pop("ce_id"), "missing header"),
        (lambda h: h.update(ce_time=b"yesterday"), "RFC 3339"),
        (lambda h: h.update(ce_time=b"2025-01-02T03:04:05"), "UTC offset"),
        (lambda h: h.update(ce_source=b"\xff"), "UTF-8"),
    ],
)
def test_bad_headers_are_malformed(mutate: object, message: str) -> None:
    envelope = sample().to_envelope()
    headers = dict(envelope_headers(envelope))
    mutate(headers)  # type: ignore[operator]
    with pytest.raises(MalformedEvent, match=message):
        envelope_from_record(list(headers.items()), envelope.data)


def test_wrong_schema_or_bad_payload_is_malformed() -> None:
    envelope = sample().to_envelope()
    with pytest.raises(MalformedEvent, match="expected"):
        decode_event(envelope, EchoRequest)
    envelope.data = b"\xff\xff\xff"
    with pytest.raises(MalformedEvent, match="not a valid"):
        decode_event(envelope, ProbeEvent)
