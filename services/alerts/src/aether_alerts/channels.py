"""The three delivery channels. Each `send` takes a claimed delivery and answers an `Outcome`:
sent, retry (a passing failure: the dispatcher backs off) or fail (retrying cannot help).

- in_app: PUBLISH the notification frame on Redis `<notify_prefix>user:<user id>`; the gateway
  forwards it verbatim to the user's chat socket. Sent = published (a user with no socket open
  reads the inbox later: the row was written with the firing).
- email: one mail through the platform's SMTP relay to the address in `contacts`.
- webhook: a signed POST to the endpoint (webhook_send.py); 2xx = sent.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosmtplib
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aether_alerts import repository, webhook_send
from aether_alerts.config import AlertsSettings
from aether_alerts.repository import Delivery
from aether_common.mailer import Mailer
from aether_common.postgres import PostgresDatabase


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # sent | retry | fail
    error: str = ""


SENT = Outcome("sent")


def _iso(time: datetime) -> str:
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


def firing_payload(firing: Any) -> dict[str, Any]:
    """The firing as every channel sends it: the in-app frame's fields, in its order."""
    return {
        "type": "notification",
        "id": firing.notification_id,
        "firing_id": firing.firing_id,
        "rule_id": firing.rule_id,
        "symbol": firing.symbol,
        "condition": firing.condition,
        "title": firing.title,
        "body": firing.body,
        "price": firing.price,
        "market_time": _iso(firing.market_time.ToDatetime(UTC)),
        "fired_at": _iso(firing.fired_at.ToDatetime(UTC)),
        "test": firing.test,
    }


FRAME_KEYS = (
    "type", "id", "firing_id", "rule_id", "symbol", "condition", "title", "body", "price",
    "market_time", "fired_at", "test",
)  # fmt: skip


def frame(payload: dict[str, Any]) -> str:
    """The exact JSON text a client gets on its socket, keys in the contract's order (jsonb,
    where the payload is kept, does not keep the order)."""
    ordered = {key: payload[key] for key in FRAME_KEYS}
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)


class InApp:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def channel_of(self, user_id: str) -> str:
        return f"{self._prefix}user:{user_id}"

    async def send(self, delivery: Delivery) -> Outcome:
        try:
            await self._redis.publish(self.channel_of(delivery.user_id), frame(delivery.payload))
        except (RedisError, OSError) as exc:
            return Outcome("retry", f"redis: {exc!r}"[:200])
        return SENT


class Email:
    def __init__(
        self, mailer: Mailer, database: PostgresDatabase, settings: AlertsSettings
    ) -> None:
        self._mailer = mailer
        self._db = database
        self._inbox = settings.public_url.rstrip("/") + settings.inbox_path

    def render(self, p: dict[str, Any]) -> tuple[str, str]:
        """Subject and body of an alert's mail."""
        test = "[test] " if p["test"] else ""
        subject = f"{test}Aether alert: {p['symbol']} {p['condition']} at {p['price']:g}"
        body = (
            f"{p['title']}\n\n{p['body']}\n\n"
            f"Symbol:      {p['symbol']}\n"
            f"Condition:   {p['condition']}\n"
            f"Price:       {p['price']:g}\n"
            f"Market time: {p['market_time']}\n\n"
            f"Your notifications: {self._inbox}\n"
        )
        return subject, body

    async def send(self, delivery: Delivery) -> Outcome:
        async with self._db.connection() as conn:
            to = await repository.contact_email(conn, delivery.user_id)
        if not to:
            # Not known yet, most likely: the account's registration event may still be on
            # its way (a user who alerts at once). Retried, with backoff, up to the limit.
            return Outcome("retry", "no_address")
        subject, body = self.render(delivery.payload)
        try:
            await self._mailer.send(to, subject, body)
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx: the server refuses this recipient for good; 4xx: try again later.
            status = "fail" if exc.code >= 500 else "retry"
            return Outcome(status, f"smtp {exc.code}: {exc.message}"[:200])
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Outcome("retry", f"smtp: {exc!r}"[:200])
        return SENT


class Webhook:
    def __init__(self, database: PostgresDatabase, settings: AlertsSettings) -> None:
        self._db = database
        self._box = webhook_send.SecretBox(settings.webhook_secret_key.get_secret_value())
        self._allow_internal = settings.environment == "dev"
        self._connect_s = settings.webhook_connect_timeout_s
        self._timeout_s = settings.webhook_timeout_s

    async def send(self, delivery: Delivery) -> Outcome:
        endpoint_id = delivery.channel.removeprefix("webhook:")
        async with self._db.connection() as conn:
            endpoint = await repository.get_webhook(conn, endpoint_id)
        if endpoint is None:
            return Outcome("fail", "endpoint_deleted")
        secrets = [self._box.open(endpoint.secret, endpoint.id)]
        previous, until = endpoint.previous_secret, endpoint.previous_until
        if previous is not None and until is not None and until > datetime.now(UTC):
            secrets.append(self._box.open(previous, endpoint.id))
        body = json.dumps(
            {**delivery.payload, "type": "alert.triggered", "delivery_id": delivery.id},
            separators=(",", ":"),
        ).encode()
        headers = {
            "X-Aether-Signature": webhook_send.signature(secrets, body),
            "X-Aether-Delivery": delivery.id,
        }
        try:
            answer = await webhook_send.post(
                endpoint.url,
                body,
                headers,
                allow_internal=self._allow_internal,
                connect_timeout_s=self._connect_s,
                timeout_s=self._timeout_s,
            )
        except webhook_send.UrlRefused as exc:
            return Outcome("fail", f"refused: {exc}")
        except (OSError, TimeoutError, ValueError) as exc:
            return Outcome("retry", f"{type(exc).__name__}: {exc}"[:200])
        if 200 <= answer.status < 300:
            return SENT
        return Outcome("retry", f"http {answer.status}")


def webhook_channel(endpoint_id: str) -> str:
    return f"webhook:{uuid.UUID(endpoint_id)}"
