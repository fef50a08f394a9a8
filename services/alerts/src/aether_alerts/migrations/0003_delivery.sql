-- Delivery of firings by in-app frame, email and webhook (delivery.py, services/alerts/README.md).

-- Users' mail addresses, from auth's events (alerts never asks auth): user.registered and
-- user.email_verified fill it, user.deleted erases it.
CREATE TABLE contacts (
    user_id    text        PRIMARY KEY,
    email      text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A user's webhook endpoints. The secret signs, so it must be readable: stored AES-256-GCM
-- encrypted under ALERTS_WEBHOOK_SECRET_KEY. After a rotation the previous secret also signs
-- until previous_until (receivers switch over without dropping deliveries).
CREATE TABLE webhooks (
    id              uuid        PRIMARY KEY,
    user_id         text        NOT NULL,
    url             text        NOT NULL,
    secret          bytea       NOT NULL,
    previous_secret bytea,
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    rotated_at      timestamptz
);
CREATE INDEX webhooks_user ON webhooks (user_id, created_at DESC, id DESC);

-- One row per (firing, channel): the primary key is the exactly-once guarantee of a delivery,
-- however often the triggered event arrives. A webhook delivery's channel is
-- 'webhook:<endpoint id>' (one row per endpoint). The dispatcher claims due rows
-- (status pending|retrying, next_attempt_at <= now()) and pushes next_attempt_at ahead by a
-- lease while it sends, so a crash mid-send retries after the lease. Failed rows are the
-- dead-delivery list; replay turns one back to pending.
CREATE TABLE deliveries (
    id              uuid        NOT NULL UNIQUE,
    firing_id       uuid        NOT NULL REFERENCES firings (id) ON DELETE CASCADE,
    channel         text        NOT NULL,
    user_id         text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'sent', 'failed', 'retrying')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '',
    next_attempt_at timestamptz,
    sent_at         timestamptz,
    -- The firing as delivered (the frame / the webhook body's fields): retries resend it as is.
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (firing_id, channel)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying');
-- A user's deliveries, latest change first (ListDeliveries: the dead-delivery list with
-- status=failed); erasure by user.
CREATE INDEX deliveries_user ON deliveries (user_id, updated_at DESC, id DESC);

-- The consumer's insert wakes the dispatchers once committed.
CREATE OR REPLACE FUNCTION deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('alert_deliveries', '');
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER deliveries_notify AFTER INSERT OR UPDATE OF status ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_notify();
