"""The alerts service's business rules: a user's rules (validated, within the plan's quota, on
symbols charts knows), their firings and the inbox.

Methods take the unit of work (or a connection for reads) and plain arguments and return
records; they write through `uow.conn`, queue events with `uow.emit()` and never commit (the
boundary, grpc.py, does). A rule of another user is NOT_FOUND, never FORBIDDEN: its existence is
not disclosed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aether_alerts import events, repository, webhook_send
from aether_alerts.callers import Caller, require_caller
from aether_alerts.config import AlertsSettings
from aether_alerts.export import AlertsExport
from aether_alerts.market import SymbolCheck
from aether_alerts.metrics import RULE_CHANGES
from aether_alerts.repository import Conn, Delivery, Firing, Notification, Page, Webhook
from aether_alerts.rules import Limits, Rule, RuleSpec, Status, validate
from aether_common.data_export import collect
from aether_common.errors import NotFound, PreconditionFailed, RateLimited, ValidationFailed
from aether_common.postgres import UnitOfWork

STATUSES = tuple(s.value for s in Status)


class AlertsService:
    def __init__(self, settings: AlertsSettings, symbols: SymbolCheck) -> None:
        self._s = settings
        self._symbols = symbols
        self._limits = Limits(min_cooldown_s=settings.min_cooldown_s)
        self._prefix = settings.topic_prefix
        self._box = webhook_send.SecretBox(settings.webhook_secret_key.get_secret_value())

    def caller(self) -> Caller:
        return require_caller(admin_role=self._s.admin_role)

    @property
    def export_max_bytes(self) -> int:
        return self._s.export_max_bytes

    def limit(self, requested: int) -> int:
        if requested < 0 or requested > self._s.max_limit:
            raise ValidationFailed(
                f"limit: 1 to {self._s.max_limit} (0: {self._s.default_limit})",
                field_errors={"limit": "out of range"},
            )
        return requested or self._s.default_limit

    # -- validation outside the transaction (charts is a network call) -----------------------
    async def checked(self, spec: RuleSpec) -> RuleSpec:
        """The definition validated, its symbol known to charts."""
        valid = validate(spec, now=datetime.now(UTC), limits=self._limits)
        await self._symbols.require_known(valid.symbol)
        return valid

    async def _within_quota(self, conn: Conn, caller: Caller, *, adding: int = 1) -> None:
        await repository.lock_user(conn, caller.user_id)
        quota = self._s.quota(caller.plan, admin=caller.admin)
        active = await repository.count_active(conn, caller.user_id)
        if active + adding > quota:
            plan = "admin" if caller.admin else (caller.plan or "free")
            raise RateLimited(
                f"quota: the {plan} plan allows {quota} active alert rules and you have {active};"
                " pause or delete one first",
                code="alert_quota_exceeded",
                metadata={"limit": str(quota), "active": str(active), "plan": plan},
            )

    # -- rules ---------------------------------------------------------------------------------
    async def create(self, uow: UnitOfWork, caller: Caller, spec: RuleSpec) -> Rule:
        await self._within_quota(uow.conn, caller)
        rule = await repository.insert_rule(uow.conn, caller.user_id, spec)
        await uow.emit(events.rule_created(rule, self._prefix))
        RULE_CHANGES.labels(event="created").inc()
        return rule

    async def get(self, conn: Conn, caller: Caller, rule_id: str, *, lock: bool = False) -> Rule:
        rule = await repository.get_rule(conn, caller.user_id, rule_id, lock=lock)
        if rule is None:
            raise NotFound(f"no alert rule {rule_id!r}", code="rule_not_found")
        return rule

    async def list_rules(
        self, conn: Conn, caller: Caller, *, status: str, symbol: str, limit: int, cursor: str
    ) -> Page[Rule]:
        if status and status not in STATUSES:
            raise ValidationFailed(
                f"status: one of {', '.join(STATUSES)}", field_errors={"status": "unknown"}
            )
        return await repository.list_rules(
            conn,
            caller.user_id,
            status=status,
            symbol=symbol.strip().upper(),
            limit=self.limit(limit),
            cursor=cursor,
        )

    async def update(
        self, uow: UnitOfWork, caller: Caller, rule_id: str, spec: RuleSpec, version: int
    ) -> Rule:
        rule = await self.get(uow.conn, caller, rule_id, lock=True)
        if version and version != rule.version:
            raise PreconditionFailed(
                f"the rule is at version {rule.version}, not {version}", code="version_mismatch"
            )
        # A fired or expired rule that is redefined is armed again; a paused one stays paused.
        status = Status.PAUSED if rule.status is Status.PAUSED else Status.ACTIVE
        if status is Status.ACTIVE and rule.status is not Status.ACTIVE:
            await self._within_quota(uow.conn, caller)
        updated = await repository.update_rule(uow.conn, rule.id, spec, status)
        await uow.emit(events.rule_updated(updated, self._prefix))
        RULE_CHANGES.labels(event="updated").inc()
        return updated

    async def pause(self, uow: UnitOfWork, caller: Caller, rule_id: str) -> Rule:
        rule = await self.get(uow.conn, caller, rule_id, lock=True)
        if rule.status is Status.PAUSED:
            return rule
        if rule.status is not Status.ACTIVE:
            raise PreconditionFailed(
                f"a {rule.status.value} rule cannot be paused (update it to arm it again)",
                code="rule_not_active",
            )
        return await self._set_status(uow, rule, Status.PAUSED)

    async def resume(self, uow: UnitOfWork, caller: Caller, rule_id: str) -> Rule:
        rule = await self.get(uow.conn, caller, rule_id, lock=True)
        if rule.status is Status.ACTIVE:
            return rule
        if rule.status is not Status.PAUSED:
            raise PreconditionFailed(
                f"a {rule.status.value} rule cannot be resumed (update it to arm it again)",
                code="rule_not_paused",
            )
        if rule.expires_at is not None and rule.expires_at <= datetime.now(UTC):
            raise PreconditionFailed("the rule has expired", code="rule_expired")
        await self._within_quota(uow.conn, caller)
        return await self._set_status(uow, rule, Status.ACTIVE)

    async def _set_status(self, uow: UnitOfWork, rule: Rule, status: Status) -> Rule:
        updated = await repository.set_status(uow.conn, rule.id, status)
        await uow.emit(events.rule_updated(updated, self._prefix))
        RULE_CHANGES.labels(event="updated").inc()
        return updated

    async def delete(self, uow: UnitOfWork, caller: Caller, rule_id: str) -> None:
        rule = await self.get(uow.conn, caller, rule_id, lock=True)
        await repository.delete_rule(uow.conn, rule.id)
        await uow.emit(events.rule_deleted(rule, self._prefix))
        RULE_CHANGES.labels(event="deleted").inc()

    async def test(self, uow: UnitOfWork, caller: Caller, rule_id: str) -> Firing:
        """The notification path without a market event: a test firing at the last price."""
        rule = await self.get(uow.conn, caller, rule_id)
        now = datetime.now(UTC)
        firing = await repository.record_firing(
            uow.conn,
            rule.id,
            trigger_id=f"test:{uuid.uuid4()}",
            price=0.0,
            market_time=now,
            title=f"Test: {rule.symbol} {describe(rule)}",
            body=f"A test of your alert on {rule.symbol}; no market event fired it.",
            test=True,
            topic_prefix=self._prefix,
        )
        assert firing is not None  # a fresh trigger id never collides
        return firing

    async def firings(
        self, conn: Conn, caller: Caller, rule_id: str, *, limit: int, cursor: str
    ) -> Page[Firing]:
        rule = await self.get(conn, caller, rule_id)
        return await repository.list_firings(conn, rule.id, limit=self.limit(limit), cursor=cursor)

    # -- the inbox -----------------------------------------------------------------------------
    async def notifications(
        self,
        conn: Conn,
        caller: Caller,
        *,
        unread_first: bool,
        unread_only: bool,
        limit: int,
        cursor: str,
    ) -> Page[Notification]:
        return await repository.list_notifications(
            conn,
            caller.user_id,
            unread_first=unread_first,
            unread_only=unread_only,
            limit=self.limit(limit),
            cursor=cursor,
        )

    async def mark_read(self, conn: Conn, caller: Caller, notification_id: str) -> Notification:
        note = await repository.mark_read(conn, caller.user_id, notification_id)
        if note is None:
            raise NotFound(f"no notification {notification_id!r}", code="notification_not_found")
        return note

    async def mark_all_read(self, conn: Conn, caller: Caller) -> int:
        return await repository.mark_all_read(conn, caller.user_id)

    async def unread_count(self, conn: Conn, caller: Caller) -> int:
        return await repository.unread_count(conn, caller.user_id)

    # -- the GDPR export -------------------------------------------------------------------------
    async def export_my_data(self, uow: UnitOfWork, caller: Caller) -> AlertsExport:
        """Everything alerts holds about the caller (export.py), in one read-only snapshot,
        streamed by cursors; ExportTooLarge past ALERTS_EXPORT_MAX_RECORDS in a section."""
        conn, user_id, limit = uow.conn, caller.user_id, self._s.export_max_records
        await repository.begin_export_snapshot(conn)
        return AlertsExport.of(
            user_id,
            contact=await repository.export_contact(conn, user_id),
            rules=await collect(
                repository.export_rules(conn, user_id), section="rules", limit=limit
            ),
            firings=await collect(
                repository.export_firings(conn, user_id), section="firings", limit=limit
            ),
            notifications=await collect(
                repository.export_notifications(conn, user_id), section="notifications", limit=limit
            ),
            deliveries=await collect(
                repository.export_deliveries(conn, user_id), section="deliveries", limit=limit
            ),
            webhooks=await collect(
                repository.export_webhooks(conn, user_id), section="webhooks", limit=limit
            ),
        )

    async def expire(self, uow: UnitOfWork, *, limit: int) -> int:
        """Rules past their expiry turn `expired` (an audit event each); answers how many."""
        expired = await repository.expire_due(uow.conn, limit=limit)
        await uow.emit(*(events.rule_updated(rule, self._prefix) for rule in expired))
        RULE_CHANGES.labels(event="expired").inc(len(expired))
        return len(expired)

    async def erase_user(self, conn: Conn, user_id: str) -> int:
        return await repository.erase_user(conn, user_id)

    async def set_contact(self, conn: Conn, user_id: str, email: str, *, verified: bool) -> None:
        """A verified address replaces the one known; a registration's only fills a gap."""
        await repository.set_contact(conn, user_id, email.strip(), replace=verified)

    # -- delivery status -------------------------------------------------------------------------
    async def deliveries(self, conn: Conn, firings: list[Firing]) -> dict[str, list[Delivery]]:
        return await repository.deliveries_of(conn, [f.id for f in firings])

    async def firing(self, conn: Conn, caller: Caller, firing_id: str) -> Firing:
        firing = await repository.get_firing(conn, caller.user_id, firing_id)
        if firing is None:
            raise NotFound(f"no firing {firing_id}")
        return firing

    async def list_deliveries(
        self, conn: Conn, caller: Caller, *, status: str, limit: int, cursor: str
    ) -> Page[Delivery]:
        if status not in ("", "pending", "sent", "failed", "retrying"):
            raise ValidationFailed(
                "status: one of pending, sent, failed, retrying (or empty for all)",
                field_errors={"status": "unknown"},
            )
        return await repository.list_deliveries(
            conn, caller.user_id, status=status, limit=self.limit(limit), cursor=cursor
        )

    async def replay(self, conn: Conn, caller: Caller, delivery_id: str) -> Delivery:
        delivery = await repository.replay_delivery(conn, caller.user_id, delivery_id)
        if delivery is None:
            raise NotFound(f"no delivery {delivery_id}")
        return delivery

    # -- webhook endpoints -----------------------------------------------------------------------
    def _checked_url(self, url: str) -> str:
        url = url.strip()
        try:
            _, host, _, _ = webhook_send.check_url(url)
            if self._s.environment != "dev" and _literal_refused(host):
                raise webhook_send.UrlRefused("url: not a public address")
        except webhook_send.UrlRefused as exc:
            raise ValidationFailed(str(exc), field_errors={"url": "refused"}) from exc
        return url

    async def create_webhook(
        self, uow: UnitOfWork, caller: Caller, url: str
    ) -> tuple[Webhook, str]:
        """The endpoint and its secret (the only time the secret is shown)."""
        url = self._checked_url(url)
        await repository.lock_user(uow.conn, caller.user_id)
        quota = self._s.webhook_quota(caller.plan, admin=caller.admin)
        have = await repository.count_webhooks(uow.conn, caller.user_id)
        if have >= quota:
            plan = "admin" if caller.admin else (caller.plan or "free")
            raise RateLimited(
                f"quota: the {plan} plan allows {quota} webhook endpoints and you have {have}",
                code="webhook_quota_exceeded",
                metadata={"limit": str(quota), "active": str(have), "plan": plan},
            )
        id_, secret = str(uuid.uuid4()), webhook_send.new_secret()
        hook = await repository.insert_webhook(
            uow.conn, id_, caller.user_id, url, self._box.seal(secret, id_)
        )
        return hook, secret

    async def webhooks(self, conn: Conn, caller: Caller) -> list[Webhook]:
        return await repository.list_webhooks(conn, caller.user_id)

    async def delete_webhook(self, uow: UnitOfWork, caller: Caller, webhook_id: str) -> None:
        if not await repository.delete_webhook(uow.conn, caller.user_id, webhook_id):
            raise NotFound(f"no webhook {webhook_id}")

    async def rotate_webhook(
        self, uow: UnitOfWork, caller: Caller, webhook_id: str
    ) -> tuple[Webhook, str]:
        id_ = repository.parse_id(webhook_id)
        secret = webhook_send.new_secret()
        hook = None
        if id_ is not None:
            hook = await repository.rotate_webhook(
                uow.conn,
                caller.user_id,
                webhook_id,
                self._box.seal(secret, str(id_)),
                grace_s=self._s.webhook_rotation_grace_s,
            )
        if hook is None:
            raise NotFound(f"no webhook {webhook_id}")
        return hook, secret


def _literal_refused(host: str) -> bool:
    """A host that is an IP literal of a non-public address, or localhost (names are checked
    again at each send, after resolving)."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return webhook_send.address_refused(host)
    except ValueError:
        return False  # a name


def describe(rule: Rule) -> str:
    """A rule in words, for notification titles: "price_above 190", "entering_channel 10-20"."""
    p = rule.params
    if rule.condition.endswith("_channel"):
        return f"{rule.condition} {p.get('lower', 0):g}-{p.get('upper', 0):g}"
    if rule.value:
        return f"{rule.condition} {rule.value:g}"
    return rule.condition
