"""The event as code sees it, and its two wire forms: Kafka headers + value, and EventEnvelope.

Header names follow protos/aether/events/v1/envelope.proto exactly (`ce_id`, `ce_type`, ...,
`traceparent`, `tracestate`). The trace context is captured when the event is *created* (inside
the request that changed state), not when the outbox relay publishes it, so a consumer's span
joins the producing request's trace.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from aether.events.v1.envelope_pb2 import EventEnvelope

M = TypeVar("M", bound=Message)

H_ID = "ce_id"
H_TYPE = "ce_type"
H_SOURCE = "ce_source"
H_TIME = "ce_time"
H_SUBJECT = "ce_subject"
H_DATASCHEMA = "ce_dataschema"
H_TRACEPARENT = "traceparent"
H_TRACESTATE = "tracestate"
TRACE_HEADERS = (H_TRACEPARENT, H_TRACESTATE)
REQUIRED_HEADERS = (H_ID, H_TYPE, H_SOURCE, H_TIME, H_SUBJECT, H_DATASCHEMA)

Headers = Sequence[tuple[str, bytes]]


class MalformedEvent(ValueError):
    """A record that cannot be an event: missing/invalid headers or an undecodable payload."""


def new_event_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def current_trace() -> dict[str, str]:
    """The active W3C trace context as header values (empty outside a span)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}  # nothing to carry; skips the propagators, which cost per event
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {k: v for k, v in carrier.items() if k in TRACE_HEADERS}


@dataclass(frozen=True, slots=True)
class Event(Generic[M]):
    """One state change. `type` is also the topic, `subject` the entity id and record key."""

    type: str
    subject: str
    payload: M
    source: str
    id: str = field(default_factory=new_event_id)
    time: datetime = field(default_factory=utcnow)
    trace: Mapping[str, str] = field(default_factory=current_trace)

    def trace_context(self) -> Context:
        return propagate.extract(dict(self.trace))

    def to_envelope(self) -> EventEnvelope:
        envelope = EventEnvelope(
            id=self.id,
            type=self.type,
            source=self.source,
            subject=self.subject,
            data_schema=self.payload.DESCRIPTOR.full_name,
            data=self.payload.SerializeToString(),
            traceparent=self.trace.get(H_TRACEPARENT, ""),
            tracestate=self.trace.get(H_TRACESTATE, ""),
        )
        envelope.time.FromDatetime(self.time.astimezone(UTC))
        return envelope


def envelope_headers(envelope: EventEnvelope) -> list[tuple[str, bytes]]:
    """Kafka headers for an envelope (its data goes in the record value, its subject the key)."""
    headers = [
        (H_ID, envelope.id.encode()),
        (H_TYPE, envelope.type.encode()),
        (H_SOURCE, envelope.source.encode()),
        (H_TIME, _timestamp_rfc3339(envelope.time.seconds, envelope.time.nanos).encode()),
        (H_SUBJECT, envelope.subject.encode()),
        (H_DATASCHEMA, envelope.data_schema.encode()),
    ]
    if envelope.traceparent:
        headers.append((H_TRACEPARENT, envelope.traceparent.encode()))
    if envelope.tracestate:
        headers.append((H_TRACESTATE, envelope.tracestate.encode()))
    return headers


def event_from_record(headers: Headers, value: bytes | None, message_type: type[M]) -> Event[M]:
    """The typed event in a consumed record; raises MalformedEvent when it is not one."""
    found = _header_values(headers)
    expected = message_type.DESCRIPTOR.full_name
    if found[H_DATASCHEMA] != expected:
        raise MalformedEvent(f"payload schema is {found[H_DATASCHEMA]!r}, expected {expected!r}")
    payload = message_type()
    try:
        payload.ParseFromString(value or b"")
    except DecodeError as exc:
        raise MalformedEvent(f"payload is not a valid {expected}: {exc}") from None
    return Event(
        type=found[H_TYPE],
        subject=found[H_SUBJECT],
        payload=payload,
        source=found[H_SOURCE],
        id=found[H_ID],
        time=_parse_time(found[H_TIME]),
        trace={name: found[name] for name in TRACE_HEADERS if found.get(name)},
    )


def envelope_from_record(headers: Headers, value: bytes | None) -> EventEnvelope:
    """Rebuild the envelope from a consumed record; raises MalformedEvent when it is not one."""
    found = _header_values(headers)
    envelope = EventEnvelope(
        id=found[H_ID],
        type=found[H_TYPE],
        source=found[H_SOURCE],
        subject=found[H_SUBJECT],
        data_schema=found[H_DATASCHEMA],
        data=value or b"",
        traceparent=found.get(H_TRACEPARENT, ""),
        tracestate=found.get(H_TRACESTATE, ""),
    )
    envelope.time.FromDatetime(_parse_time(found[H_TIME]))
    return envelope


def decode_event(envelope: EventEnvelope, message_type: type[M]) -> Event[M]:
    """The typed event inside an envelope; raises MalformedEvent on a schema or payload mismatch."""
    return event_from_record(envelope_headers(envelope), envelope.data, message_type)


def _header_values(headers: Headers) -> dict[str, str]:
    try:
        found = {name: raw.decode() for name, raw in headers}
    except UnicodeDecodeError as exc:
        raise MalformedEvent(f"header is not UTF-8: {exc}") from None
    missing = [name for name in REQUIRED_HEADERS if not found.get(name)]
    if missing:
        raise MalformedEvent("missing header(s): " + ", ".join(missing))
    return found


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedEvent(f"{H_TIME} is not RFC 3339: {text!r}") from None
    if moment.tzinfo is None:
        raise MalformedEvent(f"{H_TIME} has no UTC offset: {text!r}")
    return moment.astimezone(UTC)


def _timestamp_rfc3339(seconds: int, nanos: int) -> str:
    # Straight from the Timestamp's fields: the relay formats one per event it publishes.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"
