"""alerts' protobuf messages <-> the JSON of `/api/alerts/*` and `/api/notifications/*`."""

from __future__ import annotations

from typing import Any

from aether.alerts.v1 import alerts_pb2
from aether_gateway.ai.convert import finite, timestamp, to_timestamp
from aether_gateway.alerts.schemas import RuleIn


def spec(body: RuleIn) -> alerts_pb2.RuleSpec:
    message = alerts_pb2.RuleSpec(
        symbol=body.symbol,
        condition=body.condition,
        value=body.value,
        interval=body.interval or "",
        params={str(name): value for name, value in body.params.items()},
        frequency=body.frequency,
        cooldown_s=body.cooldown_s,
        channels=list(body.channels),
    )
    if body.expires_at is not None:
        message.expires_at.CopyFrom(to_timestamp(body.expires_at))
    return message


def rule(r: alerts_pb2.Rule) -> dict[str, Any]:
    s = r.spec
    return {
        "id": r.id,
        "symbol": s.symbol,
        "condition": s.condition,
        "value": finite(s.value),
        "interval": s.interval or None,
        "params": {k: finite(v) for k, v in sorted(s.params.items())},
        "frequency": s.frequency,
        "cooldown_s": s.cooldown_s,
        "expires_at": timestamp(s, "expires_at"),
        "channels": list(s.channels),
        "status": r.status,
        "version": r.version,
        "created_at": timestamp(r, "created_at"),
        "updated_at": timestamp(r, "updated_at"),
        "last_fired_at": timestamp(r, "last_fired_at"),
        "last_fired_bar": timestamp(r, "last_fired_bar"),
        "fired_count": r.fired_count,
    }


def firing(f: alerts_pb2.Firing) -> dict[str, Any]:
    return {
        "id": f.id,
        "rule_id": f.rule_id,
        "symbol": f.symbol,
        "condition": f.condition,
        "trigger_id": f.trigger_id,
        "price": finite(f.price),
        "market_time": timestamp(f, "market_time"),
        "fired_at": timestamp(f, "fired_at"),
        "test": f.test,
        "deliveries": [delivery(d) for d in f.deliveries],
    }


def delivery(d: alerts_pb2.Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "channel": d.channel,
        "status": d.status,
        "attempts": d.attempts,
        "last_error": d.last_error or None,
        "next_attempt_at": timestamp(d, "next_attempt_at"),
        "sent_at": timestamp(d, "sent_at"),
    }


def webhook(w: alerts_pb2.Webhook) -> dict[str, Any]:
    return {
        "id": w.id,
        "url": w.url,
        "created_at": timestamp(w, "created_at"),
        "rotated_at": timestamp(w, "rotated_at"),
        "previous_secret_until": timestamp(w, "previous_secret_until"),
    }


def notification(n: alerts_pb2.Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "rule_id": n.rule_id,
        "firing_id": n.firing_id,
        "title": n.title,
        "body": n.body,
        "created_at": timestamp(n, "created_at"),
        "read_at": timestamp(n, "read_at"),
    }
