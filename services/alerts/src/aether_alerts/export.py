"""The JSON document of ExportMyData (the GDPR export; docs/alerts.md "GDPR export"): everything
alerts holds about the caller, read in one read-only snapshot.

- `contact`: the e-mail address alert mails go to (from auth's events), or null;
- `rules`: every rule, every column (active, paused, fired, expired);
- `firings`: every firing of their rules (test firings marked), with the notification it made;
- `notifications`: the in-app inbox, read or not;
- `deliveries`: each firing's delivery per channel (status, attempts, last error, the payload
  as sent);
- `webhooks`: their endpoints' URLs and dates. Never a signing secret (current or previous):
  the user was shown it once, and an export is not a way to read it back.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from aether_alerts.repository import Firing, Notification, Webhook
from aether_alerts.rules import Rule
from aether_common.data_export import ExportDocument


class ExportedContact(BaseModel):
    email: str
    updated_at: datetime


class ExportedRule(BaseModel):
    id: str
    symbol: str
    condition: str
    value: float
    params: dict[str, float]
    interval: str
    frequency: str
    cooldown_s: int
    expires_at: datetime | None
    channels: list[str]
    status: str
    version: int
    created_at: datetime
    updated_at: datetime
    last_fired_at: datetime | None
    last_fired_bar: datetime | None
    fired_count: int


class ExportedFiring(BaseModel):
    id: str
    rule_id: str
    symbol: str
    condition: str
    trigger_id: str
    price: float
    market_time: datetime
    fired_at: datetime
    test: bool
    notification_id: str


class ExportedNotification(BaseModel):
    id: str
    firing_id: str
    rule_id: str
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


class ExportedDelivery(BaseModel):
    id: uuid.UUID
    firing_id: uuid.UUID
    channel: str
    status: str
    attempts: int
    last_error: str
    next_attempt_at: datetime | None
    sent_at: datetime | None
    payload: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ExportedWebhook(BaseModel):
    id: str
    url: str
    created_at: datetime
    rotated_at: datetime | None


class AlertsExport(ExportDocument):
    service: Literal["alerts"] = "alerts"
    contact: ExportedContact | None
    rules: list[ExportedRule]
    firings: list[ExportedFiring]
    notifications: list[ExportedNotification]
    deliveries: list[ExportedDelivery]
    webhooks: list[ExportedWebhook]

    @classmethod
    def of(
        cls,
        user_id: str,
        *,
        contact: Mapping[str, Any] | None,
        rules: Sequence[Rule],
        firings: Sequence[Firing],
        notifications: Sequence[Notification],
        deliveries: Sequence[Mapping[str, Any]],
        webhooks: Sequence[Webhook],
    ) -> AlertsExport:
        return cls(
            user_id=user_id,
            contact=ExportedContact.model_validate(dict(contact)) if contact else None,
            rules=[_rule(r) for r in rules],
            firings=[
                ExportedFiring(
                    id=f.id,
                    rule_id=f.rule_id,
                    symbol=f.symbol,
                    condition=f.condition,
                    trigger_id=f.trigger_id,
                    price=f.price,
                    market_time=f.market_time,
                    fired_at=f.fired_at,
                    test=f.test,
                    notification_id=f.notification_id,
                )
                for f in firings
            ],
            notifications=[
                ExportedNotification(
                    id=n.id,
                    firing_id=n.firing_id,
                    rule_id=n.rule_id,
                    title=n.title,
                    body=n.body,
                    created_at=n.created_at,
                    read_at=n.read_at,
                )
                for n in notifications
            ],
            deliveries=[ExportedDelivery.model_validate(dict(d)) for d in deliveries],
            webhooks=[
                ExportedWebhook(
                    id=w.id, url=w.url, created_at=w.created_at, rotated_at=w.rotated_at
                )
                for w in webhooks
            ],
        )


def _rule(r: Rule) -> ExportedRule:
    return ExportedRule(
        id=r.id,
        symbol=r.symbol,
        condition=r.condition,
        value=r.value,
        params=dict(r.params),
        interval=r.interval,
        frequency=r.frequency.value,
        cooldown_s=r.cooldown_s,
        expires_at=r.expires_at,
        channels=list(r.channels),
        status=r.status.value,
        version=r.version,
        created_at=r.created_at,
        updated_at=r.updated_at,
        last_fired_at=r.last_fired_at,
        last_fired_bar=r.last_fired_bar,
        fired_count=r.fired_count,
    )
