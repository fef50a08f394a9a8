"""Every query of the alerts service (PostgreSQL; migrations/0001_init.sql).

Tables: `rules` (partial index on symbol of the active ones: what the engine loads), `firings`
(UNIQUE (rule_id, trigger_id): a trigger fires a rule once, whoever records it and however
often), `notifications` (the inbox), the outbox and `processed_events`; 0003_delivery.sql adds
`contacts`, `webhooks` and `deliveries`.

Functions take an asyncpg connection; writers run in the caller's transaction and never commit.
The engine calls two of them: `active_rules` and `record_firing`.

Paging is keyset on (created_at, id) (firings: (fired_at, id)) newest first; the cursor is that
pair, opaque to callers.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from aether.alerts.v1 import events_pb2
from aether_alerts import events, schemas
from aether_alerts.metrics import FIRINGS_RECORDED, FIRINGS_SKIPPED
from aether_alerts.rules import Frequency, Rule, RuleSpec, Status, row_to_rule
from aether_common.errors import ValidationFailed
from aether_common.events import outbox_pg

Conn = Any  # an asyncpg connection
T = TypeVar("T")

_RULE_COLUMNS = (
    "id, user_id, symbol, condition, value, params, interval, frequency, cooldown_s, expires_at,"
    " channels, status, version, created_at, updated_at, last_fired_at, last_fired_bar,"
    " fired_count"
)


@dataclass(frozen=True, slots=True)
class Firing:
    id: str
    rule_id: str
    user_id: str
    symbol: str
    condition: str
    trigger_id: str
    price: float
    market_time: datetime
    fired_at: datetime
    test: bool
    notification_id: str


@dataclass(frozen=True, slots=True)
class Notification:
    id: str
    firing_id: str
    rule_id: str
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str


# -- cursors ---------------------------------------------------------------------------------------
def _cursor(time: datetime, id_: str) -> str:
    raw = f"{time.timestamp():.6f}|{id_}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, id_ = raw.split("|", 1)
        return datetime.fromtimestamp(float(stamp), UTC), uuid.UUID(id_)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad_cursor() from exc


def _bad_cursor() -> ValidationFailed:
    return ValidationFailed(
        "cursor: not a cursor this list gave", field_errors={"cursor": "invalid"}
    )


def parse_id(value: str) -> uuid.UUID | None:
    """A uuid, or None for anything else (an unknown id is NOT_FOUND, not a bad request)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# -- rules -----------------------------------------------------------------------------------------
async def insert_rule(conn: Conn, user_id: str, spec: RuleSpec) -> Rule:
    row = await conn.fetchrow(
        f"""INSERT INTO rules (id, user_id, symbol, condition, value, params, interval, frequency,
                               cooldown_s, expires_at, channels, status)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'active')
            RETURNING {_RULE_COLUMNS}""",  # noqa: S608 (constants)
        uuid.uuid4(),
        user_id,
        spec.symbol,
        spec.condition,
        spec.value,
        dict(spec.params),
        spec.interval,
        spec.frequency,
        spec.cooldown_s,
        spec.expires_at,
        list(spec.channels),
    )
    return row_to_rule(row)


async def get_rule(conn: Conn, user_id: str, rule_id: str, *, lock: bool = False) -> Rule | None:
    id_ = parse_id(rule_id)
    if id_ is None:
        return None
    row = await conn.fetchrow(
        f"SELECT {_RULE_COLUMNS} FROM rules WHERE id = $1 AND user_id = $2"  # noqa: S608 (constants)
        + (" FOR UPDATE" if lock else ""),
        id_,
        user_id,
    )
    return None if row is None else row_to_rule(row)


async def list_rules(
    conn: Conn, user_id: str, *, status: str, symbol: str, limit: int, cursor: str
) -> Page[Rule]:
    after = _parse_cursor(cursor)
    rows = await conn.fetch(
        f"""SELECT {_RULE_COLUMNS} FROM rules
            WHERE user_id = $1
              AND ($2 = '' OR status = $2) AND ($3 = '' OR symbol = $3)
              AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
            ORDER BY created_at DESC, id DESC LIMIT $6""",  # noqa: S608 (constants)
        user_id,
        status,
        symbol,
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    rules = [row_to_rule(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(rules, _cursor(rules[-1].created_at, rules[-1].id) if more else "")


async def update_rule(conn: Conn, rule_id: str, spec: RuleSpec, status: Status) -> Rule:
    row = await conn.fetchrow(
        f"""UPDATE rules SET symbol = $2, condition = $3, value = $4, params = $5, interval = $6,
                   frequency = $7, cooldown_s = $8, expires_at = $9, channels = $10, status = $11,
                   version = version + 1, updated_at = now()
            WHERE id = $1 RETURNING {_RULE_COLUMNS}""",  # noqa: S608 (constants)
        uuid.UUID(rule_id),
        spec.symbol,
        spec.condition,
        spec.value,
        dict(spec.params),
        spec.interval,
        spec.frequency,
        spec.cooldown_s,
        spec.expires_at,
        list(spec.channels),
        status.value,
    )
    return row_to_rule(row)


async def set_status(conn: Conn, rule_id: str, status: Status) -> Rule:
    row = await conn.fetchrow(
        f"""UPDATE rules SET status = $2, version = version + 1, updated_at = now()
            WHERE id = $1 RETURNING {_RULE_COLUMNS}""",  # noqa: S608 (constants)
        uuid.UUID(rule_id),
        status.value,
    )
    return row_to_rule(row)


async def delete_rule(conn: Conn, rule_id: str) -> None:
    # Firings and their notifications go with it (ON DELETE CASCADE).
    await conn.execute("DELETE FROM rules WHERE id = $1", uuid.UUID(rule_id))


async def count_active(conn: Conn, user_id: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM rules WHERE user_id = $1 AND status = 'active'", user_id
    )
    return count


async def lock_user(conn: Conn, user_id: str) -> None:
    """Serialises a user's quota checks (two concurrent creates must not both take the last
    slot); transaction-scoped."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('alerts.quota:' || $1, 0))", user_id
    )


async def expire_due(conn: Conn, *, limit: int) -> list[Rule]:
    """Active or paused rules whose `expires_at` passed turn `expired`, `limit` at most; rows
    another replica is expiring are skipped (it reports them)."""
    rows = await conn.fetch(
        f"""UPDATE rules SET status = 'expired', version = version + 1, updated_at = now()
            WHERE id IN (SELECT id FROM rules
                         WHERE status IN ('active', 'paused') AND expires_at <= now()
                         ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
            RETURNING {_RULE_COLUMNS}""",  # noqa: S608 (constants)
        limit,
    )
    return [row_to_rule(r) for r in rows]


async def active_rules(conn: Conn, symbols: Sequence[str] | None) -> list[Rule]:
    """The active rules of `symbols` (every active rule for None): what the engine indexes.
    Rules past their expiry are left out (the engine never fires them)."""
    if symbols is None:
        rows = await conn.fetch(
            f"""SELECT {_RULE_COLUMNS} FROM rules WHERE status = 'active'
                AND (expires_at IS NULL OR expires_at > now())"""  # noqa: S608 (constants)
        )
    else:
        rows = await conn.fetch(
            f"""SELECT {_RULE_COLUMNS} FROM rules WHERE status = 'active'
                AND symbol = ANY($1::text[]) AND (expires_at IS NULL OR expires_at > now())""",  # noqa: S608 (constants)
            [s.upper() for s in symbols],
        )
    return [row_to_rule(r) for r in rows]


async def active_rule(conn: Conn, rule_id: str) -> Rule | None:
    """The rule if it is active and not past its expiry (what the engine keeps indexed)."""
    row = await conn.fetchrow(
        f"""SELECT {_RULE_COLUMNS} FROM rules WHERE id = $1 AND status = 'active'
            AND (expires_at IS NULL OR expires_at > now())""",  # noqa: S608 (constants)
        uuid.UUID(rule_id),
    )
    return None if row is None else row_to_rule(row)


async def record_firing(
    conn: Conn,
    rule_id: str,
    *,
    trigger_id: str,
    price: float,
    market_time: datetime,
    title: str,
    body: str,
    test: bool = False,
    bar_start: datetime | None = None,
    topic_prefix: str = "",
) -> Firing | None:
    """Record that `trigger_id` (a tick or bar id) fired rule `rule_id`, in the caller's
    transaction:
    the firing, its inbox notification, the rule's state (fired count, last_fired_at wall clock,
    last_fired_bar = `bar_start` or the market time, status fired for a `once` rule) and the
    `aether.alert.triggered.v1` event in the outbox.

    The rule's row is locked and read again first: the engine's copy may be stale (another
    replica fired it, the user paused, redefined or deleted it). None, and nothing written,
    when this trigger already fired this rule, or the rule as stored is not armed: deleted, not
    active, past `expires_at`, an `every_time` rule inside its cool-down, a `once_per_bar` rule
    that fired in the bar `bar_start` already (pass `bar_start` for those). The stored rule's
    values (channels, frequency) are the ones used. A `test` firing skips those checks and
    leaves the rule's state alone."""
    current = await conn.fetchrow(
        f"SELECT {_RULE_COLUMNS}, now() AS now FROM rules WHERE id = $1 FOR UPDATE",  # noqa: S608 (constants)
        uuid.UUID(rule_id),
    )
    if current is None:
        FIRINGS_SKIPPED.labels(reason="deleted").inc()
        return None
    stored = row_to_rule(current)
    if not test:
        reason = _not_armed(stored, current["now"], bar_start)
        if reason is not None:
            FIRINGS_SKIPPED.labels(reason=reason).inc()
            return None
    rule = stored
    firing_id = uuid.uuid4()
    row = await conn.fetchrow(
        """INSERT INTO firings (id, rule_id, user_id, trigger_id, price, market_time, test)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (rule_id, trigger_id) DO NOTHING
           RETURNING fired_at""",
        firing_id,
        uuid.UUID(rule.id),
        rule.user_id,
        trigger_id,
        price,
        market_time,
        test,
    )
    if row is None:
        FIRINGS_SKIPPED.labels(reason="duplicate").inc()
        return None
    FIRINGS_RECORDED.labels(test=str(test).lower()).inc()
    fired_at: datetime = row["fired_at"]
    notification_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO notifications (id, user_id, firing_id, rule_id, title, body, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        notification_id,
        rule.user_id,
        firing_id,
        uuid.UUID(rule.id),
        title,
        body,
        fired_at,
    )
    updated: Rule | None = None
    if not test:
        fired_once = rule.frequency is Frequency.ONCE
        new_row = await conn.fetchrow(
            f"""UPDATE rules SET fired_count = fired_count + 1, last_fired_at = $2,
                       last_fired_bar = $3,
                       status = CASE WHEN $4 THEN 'fired' ELSE status END,
                       version = version + CASE WHEN $4 THEN 1 ELSE 0 END,
                       updated_at = CASE WHEN $4 THEN now() ELSE updated_at END
                WHERE id = $1 RETURNING {_RULE_COLUMNS}""",  # noqa: S608 (constants)
            uuid.UUID(rule.id),
            fired_at,
            bar_start or market_time,
            fired_once,
        )
        if fired_once and new_row is not None:
            updated = row_to_rule(new_row)
    firing = Firing(
        id=str(firing_id),
        rule_id=rule.id,
        user_id=rule.user_id,
        symbol=rule.symbol,
        condition=rule.condition,
        trigger_id=trigger_id,
        price=price,
        market_time=market_time,
        fired_at=fired_at,
        test=test,
        notification_id=str(notification_id),
    )
    payload: events_pb2.AlertTriggered = schemas.triggered_pb(firing, title, body, rule.channels)
    outgoing = [events.triggered(payload, topic_prefix)]
    if updated is not None:  # the rule changed status: its audit trail says so
        outgoing.append(events.rule_updated(updated, topic_prefix))
    await outbox_pg.add_many(conn, outgoing)
    return firing


def _not_armed(rule: Rule, now: datetime, bar_start: datetime | None) -> str | None:
    """Why the stored rule must not fire now (a metric label), or None."""
    if rule.status is not Status.ACTIVE:
        return "not_active"
    if rule.expires_at is not None and rule.expires_at <= now:
        return "expired"
    last = rule.last_fired_at
    cooling = last is not None and (now - last).total_seconds() < rule.cooldown_s
    if rule.frequency is Frequency.EVERY_TIME and cooling:
        return "cooling_down"
    if (
        rule.frequency is Frequency.ONCE_PER_BAR
        and bar_start is not None
        and rule.last_fired_bar == bar_start
    ):
        return "same_bar"
    return None


_FIRING_COLUMNS = (
    "f.id, f.rule_id, f.user_id, r.symbol, r.condition, f.trigger_id, f.price, f.market_time,"
    " f.fired_at, f.test, n.id AS notification_id"
)


def _firing(row: Any) -> Firing:
    return Firing(
        id=str(row["id"]),
        rule_id=str(row["rule_id"]),
        user_id=row["user_id"],
        symbol=row["symbol"],
        condition=row["condition"],
        trigger_id=row["trigger_id"],
        price=row["price"],
        market_time=row["market_time"],
        fired_at=row["fired_at"],
        test=row["test"],
        notification_id=str(row["notification_id"] or ""),
    )


async def list_firings(conn: Conn, rule_id: str, *, limit: int, cursor: str) -> Page[Firing]:
    after = _parse_cursor(cursor)
    rows = await conn.fetch(
        f"""SELECT {_FIRING_COLUMNS} FROM firings f
            JOIN rules r ON r.id = f.rule_id
            LEFT JOIN notifications n ON n.firing_id = f.id
            WHERE f.rule_id = $1
              AND ($2::timestamptz IS NULL OR (f.fired_at, f.id) < ($2, $3))
            ORDER BY f.fired_at DESC, f.id DESC LIMIT $4""",  # noqa: S608 (constants)
        uuid.UUID(rule_id),
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    firings = [_firing(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(firings, _cursor(firings[-1].fired_at, firings[-1].id) if more else "")


# -- the inbox ---------------------------------------------------------------------------------
_NOTE_COLUMNS = "id, firing_id, rule_id, title, body, created_at, read_at"


def _note(row: Any) -> Notification:
    return Notification(
        id=str(row["id"]),
        firing_id=str(row["firing_id"]),
        rule_id=str(row["rule_id"]),
        title=row["title"],
        body=row["body"],
        created_at=row["created_at"],
        read_at=row["read_at"],
    )


async def list_notifications(
    conn: Conn, user_id: str, *, unread_first: bool, unread_only: bool, limit: int, cursor: str
) -> Page[Notification]:
    """Newest first; `unread_first`: the unread ones (newest first), then the read ones. The
    cursor of that order carries which group it stopped in."""
    group, after = _parse_inbox_cursor(cursor)
    if unread_only:
        unread_first = False
    rows = await conn.fetch(
        f"""SELECT {_NOTE_COLUMNS}, (read_at IS NOT NULL AND $2) AS grp FROM notifications
            WHERE user_id = $1 AND (NOT $3 OR read_at IS NULL)
              AND ($4::timestamptz IS NULL
                   OR (read_at IS NOT NULL AND $2) > $5
                   OR ((read_at IS NOT NULL AND $2) = $5 AND (created_at, id) < ($4, $6)))
            ORDER BY grp, created_at DESC, id DESC LIMIT $7""",  # noqa: S608 (constants)
        user_id,
        unread_first,
        unread_only,
        after[0] if after else None,
        group,
        after[1] if after else None,
        limit + 1,
    )
    notes = [_note(r) for r in rows[:limit]]
    more = len(rows) > limit
    next_cursor = ""
    if more:
        last = rows[limit - 1]
        next_cursor = ("r" if last["grp"] else "u") + _cursor(last["created_at"], str(last["id"]))
    return Page(notes, next_cursor)


def _parse_inbox_cursor(cursor: str) -> tuple[bool, tuple[datetime, uuid.UUID] | None]:
    if not cursor:
        return False, None
    if cursor[0] not in "ur":
        raise _bad_cursor()
    return cursor[0] == "r", _parse_cursor(cursor[1:])


async def mark_read(conn: Conn, user_id: str, notification_id: str) -> Notification | None:
    id_ = parse_id(notification_id)
    if id_ is None:
        return None
    row = await conn.fetchrow(
        f"""UPDATE notifications SET read_at = coalesce(read_at, now())
            WHERE id = $1 AND user_id = $2 RETURNING {_NOTE_COLUMNS}""",  # noqa: S608 (constants)
        id_,
        user_id,
    )
    return None if row is None else _note(row)


async def mark_all_read(conn: Conn, user_id: str) -> int:
    status: str = await conn.execute(
        "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL", user_id
    )
    return int(status.split()[-1])


async def unread_count(conn: Conn, user_id: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL", user_id
    )
    return count


async def erase_user(conn: Conn, user_id: str) -> int:
    """Every rule, firing (their deliveries cascade), notification, webhook endpoint and the
    contact address of a user; answers the rules erased."""
    await conn.execute("DELETE FROM contacts WHERE user_id = $1", user_id)
    await conn.execute("DELETE FROM webhooks WHERE user_id = $1", user_id)
    await conn.execute("DELETE FROM notifications WHERE user_id = $1", user_id)
    await conn.execute("DELETE FROM firings WHERE user_id = $1", user_id)
    status: str = await conn.execute("DELETE FROM rules WHERE user_id = $1", user_id)
    return int(status.split()[-1])


# -- delivery (0003_delivery.sql) ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    firing_id: str
    channel: str  # in_app | email | webhook:<endpoint id>
    user_id: str
    status: str  # pending | sent | failed | retrying
    attempts: int
    last_error: str
    next_attempt_at: datetime | None
    sent_at: datetime | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    user_id: str
    url: str
    secret: bytes
    previous_secret: bytes | None
    previous_until: datetime | None
    created_at: datetime
    rotated_at: datetime | None


_DELIVERY_COLUMNS = (
    "id, firing_id, channel, user_id, status, attempts, last_error, next_attempt_at, sent_at,"
    " payload"
)
_WEBHOOK_COLUMNS = (
    "id, user_id, url, secret, previous_secret, previous_until, created_at, rotated_at"
)


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=str(row["id"]),
        firing_id=str(row["firing_id"]),
        channel=row["channel"],
        user_id=row["user_id"],
        status=row["status"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        next_attempt_at=row["next_attempt_at"],
        sent_at=row["sent_at"],
        payload=row["payload"],
    )


def _webhook(row: Any) -> Webhook:
    return Webhook(
        id=str(row["id"]),
        user_id=row["user_id"],
        url=row["url"],
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        previous_until=row["previous_until"],
        created_at=row["created_at"],
        rotated_at=row["rotated_at"],
    )


async def set_contact(conn: Conn, user_id: str, email: str, *, replace: bool) -> None:
    """`replace=False` keeps an address already known (a late registration event must not
    undo a newer verified address: the two come on different topics, in no set order)."""
    await conn.execute(
        """INSERT INTO contacts (user_id, email) VALUES ($1, $2)
           ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, updated_at = now()
           WHERE $3""",
        user_id,
        email,
        replace,
    )


async def contact_email(conn: Conn, user_id: str) -> str | None:
    email: str | None = await conn.fetchval(
        "SELECT email FROM contacts WHERE user_id = $1", user_id
    )
    return email


async def insert_webhook(conn: Conn, id_: str, user_id: str, url: str, secret: bytes) -> Webhook:
    row = await conn.fetchrow(
        f"""INSERT INTO webhooks (id, user_id, url, secret) VALUES ($1, $2, $3, $4)
            RETURNING {_WEBHOOK_COLUMNS}""",  # noqa: S608 (constants)
        uuid.UUID(id_),
        user_id,
        url,
        secret,
    )
    return _webhook(row)


async def count_webhooks(conn: Conn, user_id: str) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM webhooks WHERE user_id = $1", user_id)
    return count


async def list_webhooks(conn: Conn, user_id: str) -> list[Webhook]:
    rows = await conn.fetch(
        f"""SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE user_id = $1
            ORDER BY created_at DESC, id DESC""",  # noqa: S608 (constants)
        user_id,
    )
    return [_webhook(r) for r in rows]


async def get_webhook(conn: Conn, webhook_id: str) -> Webhook | None:
    id_ = parse_id(webhook_id)
    if id_ is None:
        return None
    row = await conn.fetchrow(
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1",  # noqa: S608 (constants)
        id_,
    )
    return None if row is None else _webhook(row)


async def delete_webhook(conn: Conn, user_id: str, webhook_id: str) -> bool:
    id_ = parse_id(webhook_id)
    if id_ is None:
        return False
    status: str = await conn.execute(
        "DELETE FROM webhooks WHERE id = $1 AND user_id = $2", id_, user_id
    )
    return status.endswith(" 1")


async def rotate_webhook(
    conn: Conn, user_id: str, webhook_id: str, secret: bytes, *, grace_s: int
) -> Webhook | None:
    """The new secret signs from now; the old one too for `grace_s` (0: not at all)."""
    id_ = parse_id(webhook_id)
    if id_ is None:
        return None
    row = await conn.fetchrow(
        f"""UPDATE webhooks SET
                previous_secret = CASE WHEN $4 > 0 THEN secret END,
                previous_until = CASE WHEN $4 > 0 THEN now() + make_interval(secs => $4) END,
                secret = $3, rotated_at = now()
            WHERE id = $1 AND user_id = $2 RETURNING {_WEBHOOK_COLUMNS}""",  # noqa: S608 (constants)
        id_,
        user_id,
        secret,
        grace_s,
    )
    return None if row is None else _webhook(row)


async def insert_deliveries(
    conn: Conn, firing_id: str, user_id: str, rows: Sequence[tuple[str, dict[str, Any]]]
) -> int:
    """One pending delivery per (channel, payload), due now; an existing (firing, channel) is
    left alone (a redelivered event). Answers how many were new."""
    if not rows:
        return 0
    status: str = await conn.execute(
        """INSERT INTO deliveries (id, firing_id, channel, user_id, payload, next_attempt_at)
           SELECT gen_random_uuid(), $1, c.channel, $2, c.payload, now()
           FROM unnest($3::text[], $4::jsonb[]) AS c(channel, payload)
           ON CONFLICT (firing_id, channel) DO NOTHING""",
        uuid.UUID(firing_id),
        user_id,
        [c for c, _ in rows],
        [p for _, p in rows],
    )
    return int(status.split()[-1])


async def claim_due(conn: Conn, *, limit: int, lease_s: float) -> list[Delivery]:
    """Due deliveries, each counted as an attempt and pushed `lease_s` ahead while it is sent
    (a sender that dies leaves it due again then); replicas skip each other's rows."""
    rows = await conn.fetch(
        f"""UPDATE deliveries d SET attempts = d.attempts + 1, updated_at = now(),
                   next_attempt_at = now() + make_interval(secs => $2)
            FROM (SELECT firing_id, channel FROM deliveries
                  WHERE status IN ('pending', 'retrying') AND next_attempt_at <= now()
                  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
            WHERE d.firing_id = due.firing_id AND d.channel = due.channel
            RETURNING {", ".join("d." + c.strip() for c in _DELIVERY_COLUMNS.split(","))}""",  # noqa: S608 (constants)
        limit,
        lease_s,
    )
    return [_delivery(r) for r in rows]


async def finish_delivery(
    conn: Conn, delivery_id: str, *, status: str, error: str, retry_in_s: float | None
) -> None:
    await conn.execute(
        """UPDATE deliveries SET status = $2, last_error = $3, updated_at = now(),
               next_attempt_at = CASE WHEN $4::float8 IS NULL THEN NULL
                                      ELSE now() + make_interval(secs => $4) END,
               sent_at = CASE WHEN $2 = 'sent' THEN now() ELSE sent_at END
           WHERE id = $1""",
        uuid.UUID(delivery_id),
        status,
        error[:500],
        retry_in_s,
    )


async def deliveries_of(conn: Conn, firing_ids: Sequence[str]) -> dict[str, list[Delivery]]:
    rows = await conn.fetch(
        f"""SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE firing_id = ANY($1::uuid[])
            ORDER BY channel""",  # noqa: S608 (constants)
        [uuid.UUID(f) for f in firing_ids],
    )
    found: dict[str, list[Delivery]] = {f: [] for f in firing_ids}
    for row in rows:
        found[str(row["firing_id"])].append(_delivery(row))
    return found


async def firing_exists(conn: Conn, firing_id: str) -> bool:
    found = await conn.fetchval("SELECT 1 FROM firings WHERE id = $1", uuid.UUID(firing_id))
    return found is not None


async def get_firing(conn: Conn, user_id: str, firing_id: str) -> Firing | None:
    id_ = parse_id(firing_id)
    if id_ is None:
        return None
    row = await conn.fetchrow(
        f"""SELECT {_FIRING_COLUMNS} FROM firings f
            JOIN rules r ON r.id = f.rule_id
            LEFT JOIN notifications n ON n.firing_id = f.id
            WHERE f.id = $1 AND f.user_id = $2""",  # noqa: S608 (constants)
        id_,
        user_id,
    )
    return None if row is None else _firing(row)


async def list_deliveries(
    conn: Conn, user_id: str, *, status: str, limit: int, cursor: str
) -> Page[Delivery]:
    after = _parse_cursor(cursor)
    rows = await conn.fetch(
        f"""SELECT {_DELIVERY_COLUMNS}, updated_at FROM deliveries
            WHERE user_id = $1 AND ($2 = '' OR status = $2)
              AND ($3::timestamptz IS NULL OR (updated_at, id) < ($3, $4))
            ORDER BY updated_at DESC, id DESC LIMIT $5""",  # noqa: S608 (constants)
        user_id,
        status,
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    items = [_delivery(r) for r in rows[:limit]]
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return Page(items, _cursor(last["updated_at"], str(last["id"])) if last else "")


async def replay_delivery(conn: Conn, user_id: str, delivery_id: str) -> Delivery | None:
    """The delivery due again now, with a fresh attempt budget (whatever its status)."""
    id_ = parse_id(delivery_id)
    if id_ is None:
        return None
    row = await conn.fetchrow(
        f"""UPDATE deliveries SET status = 'pending', attempts = 0, last_error = '',
                   next_attempt_at = now(), updated_at = now()
            WHERE id = $1 AND user_id = $2 RETURNING {_DELIVERY_COLUMNS}""",  # noqa: S608 (constants)
        id_,
        user_id,
    )
    return None if row is None else _delivery(row)


# -- the GDPR export (export.py): a user's rows, streamed ---------------------------------------
# Rows fetched per round trip by the export's cursors (they need the transaction export opens).
EXPORT_PREFETCH = 500


async def begin_export_snapshot(conn: Conn) -> None:
    """Make the open transaction one read-only snapshot (its first statement): every section of
    the export is read as of the same moment."""
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")


async def export_contact(conn: Conn, user_id: str) -> Any:
    return await conn.fetchrow("SELECT email, updated_at FROM contacts WHERE user_id = $1", user_id)


def export_rules(conn: Conn, user_id: str) -> AsyncIterator[Rule]:
    return _mapped(
        conn.cursor(
            f"""SELECT {_RULE_COLUMNS} FROM rules WHERE user_id = $1
                ORDER BY created_at, id""",  # noqa: S608 (constants)
            user_id,
            prefetch=EXPORT_PREFETCH,
        ),
        row_to_rule,
    )


def export_firings(conn: Conn, user_id: str) -> AsyncIterator[Firing]:
    return _mapped(
        conn.cursor(
            f"""SELECT {_FIRING_COLUMNS} FROM firings f
                JOIN rules r ON r.id = f.rule_id
                LEFT JOIN notifications n ON n.firing_id = f.id
                WHERE f.user_id = $1 ORDER BY f.fired_at, f.id""",  # noqa: S608 (constants)
            user_id,
            prefetch=EXPORT_PREFETCH,
        ),
        _firing,
    )


def export_notifications(conn: Conn, user_id: str) -> AsyncIterator[Notification]:
    return _mapped(
        conn.cursor(
            f"""SELECT {_NOTE_COLUMNS} FROM notifications WHERE user_id = $1
                ORDER BY created_at, id""",  # noqa: S608 (constants)
            user_id,
            prefetch=EXPORT_PREFETCH,
        ),
        _note,
    )


def export_deliveries(conn: Conn, user_id: str) -> AsyncIterator[Any]:
    """Every column of the user's deliveries (rows: created_at and updated_at included)."""
    return _mapped(
        conn.cursor(
            f"""SELECT {_DELIVERY_COLUMNS}, created_at, updated_at FROM deliveries
                WHERE user_id = $1 ORDER BY created_at, id""",  # noqa: S608 (constants)
            user_id,
            prefetch=EXPORT_PREFETCH,
        ),
        dict,
    )


def export_webhooks(conn: Conn, user_id: str) -> AsyncIterator[Webhook]:
    return _mapped(
        conn.cursor(
            f"""SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE user_id = $1
                ORDER BY created_at, id""",  # noqa: S608 (constants)
            user_id,
            prefetch=EXPORT_PREFETCH,
        ),
        _webhook,
    )


async def _mapped(rows: AsyncIterable[Any], to: Callable[[Any], T]) -> AsyncIterator[T]:
    async for row in rows:
        yield to(row)
