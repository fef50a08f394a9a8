"""The events the alerts service publishes (docs/events.md): topic = type, key = user id, so one
user's rule changes and firings stay in order. Payloads: protos/aether/alerts/v1/events.proto.

- `aether.alert.rule.created.v1` / `.updated.v1` / `.deleted.v1`: the rule (an audit trail);
- `aether.alert.triggered.v1`: a firing, written by `repository.record_firing` in the
  transaction that records it (the engine's and TestRule's); delivery consumes it.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from aether.alerts.v1 import events_pb2
from aether_alerts import schemas
from aether_alerts.rules import Rule
from aether_common.events import Event, TopicSpec

SOURCE = "alerts"
RULE_CREATED = "aether.alert.rule.created.v1"
RULE_UPDATED = "aether.alert.rule.updated.v1"
RULE_DELETED = "aether.alert.rule.deleted.v1"
TRIGGERED = "aether.alert.triggered.v1"
TOPICS = (RULE_CREATED, RULE_UPDATED, RULE_DELETED, TRIGGERED)


def topic_specs(prefix: str = "") -> list[TopicSpec]:
    return [TopicSpec(prefix + topic) for topic in TOPICS]


def _event(prefix: str, topic: str, user_id: str, payload: Message) -> Event[Any]:
    return Event(type=prefix + topic, subject=user_id, payload=payload, source=SOURCE)


def rule_created(rule: Rule, prefix: str = "") -> Event[Any]:
    payload = events_pb2.RuleCreated(rule=schemas.rule_pb(rule))
    return _event(prefix, RULE_CREATED, rule.user_id, payload)


def rule_updated(rule: Rule, prefix: str = "") -> Event[Any]:
    payload = events_pb2.RuleUpdated(rule=schemas.rule_pb(rule))
    return _event(prefix, RULE_UPDATED, rule.user_id, payload)


def rule_deleted(rule: Rule, prefix: str = "") -> Event[Any]:
    payload = events_pb2.RuleDeleted(rule=schemas.rule_pb(rule))
    return _event(prefix, RULE_DELETED, rule.user_id, payload)


def triggered(payload: events_pb2.AlertTriggered, prefix: str = "") -> Event[Any]:
    return _event(prefix, TRIGGERED, payload.user_id, payload)
