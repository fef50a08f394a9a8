"""Between protobuf (alerts.proto, events.proto) and the service's records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from aether.alerts.v1 import alerts_pb2, events_pb2
from aether_alerts.rules import Rule, RuleSpec

if TYPE_CHECKING:
    from aether_alerts.repository import Delivery, Firing, Notification, Webhook


def _ts(time: datetime | None) -> timestamp_pb2.Timestamp | None:
    if time is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(time.astimezone(UTC))
    return ts


def _time(message: object, name: str) -> datetime | None:
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, name)
    return ts.ToDatetime(tzinfo=UTC)


def spec(message: alerts_pb2.RuleSpec) -> RuleSpec:
    return RuleSpec(
        symbol=message.symbol,
        condition=message.condition,
        value=message.value,
        params=dict(message.params),
        interval=message.interval,
        frequency=message.frequency,
        cooldown_s=message.cooldown_s,
        expires_at=_time(message, "expires_at"),
        channels=tuple(message.channels),
    )


def spec_pb(s: RuleSpec) -> alerts_pb2.RuleSpec:
    return alerts_pb2.RuleSpec(
        symbol=s.symbol,
        condition=s.condition,
        value=s.value,
        params=dict(s.params),
        interval=s.interval,
        frequency=s.frequency,
        cooldown_s=s.cooldown_s,
        expires_at=_ts(s.expires_at),
        channels=list(s.channels),
    )


def rule_pb(rule: Rule) -> alerts_pb2.Rule:
    return alerts_pb2.Rule(
        id=rule.id,
        user_id=rule.user_id,
        spec=spec_pb(rule.spec()),
        status=rule.status.value,
        version=rule.version,
        created_at=_ts(rule.created_at),
        updated_at=_ts(rule.updated_at),
        last_fired_at=_ts(rule.last_fired_at),
        last_fired_bar=_ts(rule.last_fired_bar),
        fired_count=rule.fired_count,
    )


def firing_pb(f: Firing, deliveries: Sequence[Delivery] = ()) -> alerts_pb2.Firing:
    return alerts_pb2.Firing(
        deliveries=[delivery_pb(d) for d in deliveries],
        id=f.id,
        rule_id=f.rule_id,
        user_id=f.user_id,
        symbol=f.symbol,
        condition=f.condition,
        trigger_id=f.trigger_id,
        price=f.price,
        market_time=_ts(f.market_time),
        fired_at=_ts(f.fired_at),
        test=f.test,
    )


def triggered_pb(
    f: Firing, title: str, body: str, channels: Sequence[str]
) -> events_pb2.AlertTriggered:
    return events_pb2.AlertTriggered(
        firing_id=f.id,
        rule_id=f.rule_id,
        user_id=f.user_id,
        symbol=f.symbol,
        condition=f.condition,
        price=f.price,
        market_time=_ts(f.market_time),
        trigger_id=f.trigger_id,
        fired_at=_ts(f.fired_at),
        test=f.test,
        notification_id=f.notification_id,
        title=title,
        body=body,
        channels=list(channels),
    )


def notification_pb(n: Notification) -> alerts_pb2.Notification:
    return alerts_pb2.Notification(
        id=n.id,
        firing_id=n.firing_id,
        rule_id=n.rule_id,
        title=n.title,
        body=n.body,
        created_at=_ts(n.created_at),
        read_at=_ts(n.read_at),
    )


def delivery_pb(d: Delivery) -> alerts_pb2.Delivery:
    return alerts_pb2.Delivery(
        id=d.id,
        firing_id=d.firing_id,
        channel=d.channel,
        status=d.status,
        attempts=d.attempts,
        last_error=d.last_error,
        next_attempt_at=_ts(d.next_attempt_at) if d.status in ("pending", "retrying") else None,
        sent_at=_ts(d.sent_at),
    )


def webhook_pb(w: Webhook) -> alerts_pb2.Webhook:
    return alerts_pb2.Webhook(
        id=w.id,
        url=w.url,
        created_at=_ts(w.created_at),
        rotated_at=_ts(w.rotated_at),
        previous_secret_until=_ts(w.previous_until),
    )
