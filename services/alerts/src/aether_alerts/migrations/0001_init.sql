-- The alerts service's rules, firings and inbox (services/alerts/README.md).

CREATE TABLE rules (
    id             uuid             PRIMARY KEY,
    user_id        text             NOT NULL,
    symbol         text             NOT NULL,
    condition      text             NOT NULL,
    value          double precision NOT NULL,
    -- Condition parameters (lower/upper, window_s, period, fast/slow/signal): numbers by key.
    params         jsonb            NOT NULL DEFAULT '{}'::jsonb,
    -- '' when the condition and frequency need none.
    interval       text             NOT NULL DEFAULT '',
    frequency      text             NOT NULL CHECK (frequency IN ('once', 'once_per_bar', 'every_time')),
    cooldown_s     integer          NOT NULL DEFAULT 0 CHECK (cooldown_s >= 0),
    expires_at     timestamptz,
    channels       text[]           NOT NULL,
    status         text             NOT NULL CHECK (status IN ('active', 'paused', 'fired', 'expired')),
    version        bigint           NOT NULL DEFAULT 1,
    created_at     timestamptz      NOT NULL DEFAULT now(),
    updated_at     timestamptz      NOT NULL DEFAULT now(),
    -- Wall clock (cool-downs); market time of the firing bar's start (once_per_bar).
    last_fired_at  timestamptz,
    last_fired_bar timestamptz,
    fired_count    bigint           NOT NULL DEFAULT 0
);
-- The engine loads "active rules of symbols X" (rules.active_rules) at start and on rebalance.
CREATE INDEX rules_active_symbol ON rules (symbol) WHERE status = 'active';
-- A user's rules newest first (ListRules paging on (created_at, id)); the quota counts them.
CREATE INDEX rules_user ON rules (user_id, created_at DESC, id DESC);
-- Expiry (expiry.py) finds the armed rules whose time is up.
CREATE INDEX rules_expiring ON rules (expires_at)
    WHERE status IN ('active', 'paused') AND expires_at IS NOT NULL;

-- One row per firing. UNIQUE (rule_id, trigger_id) is the exactly-once guarantee: the tick or
-- bar that fired a rule fires it once, however often it is delivered or evaluated.
CREATE TABLE firings (
    id          uuid             PRIMARY KEY,
    rule_id     uuid             NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    user_id     text             NOT NULL,
    trigger_id  text             NOT NULL,
    price       double precision NOT NULL,
    market_time timestamptz      NOT NULL,
    fired_at    timestamptz      NOT NULL DEFAULT now(),
    test        boolean          NOT NULL DEFAULT false,
    UNIQUE (rule_id, trigger_id)
);
CREATE INDEX firings_rule ON firings (rule_id, fired_at DESC, id DESC);
CREATE INDEX firings_user ON firings (user_id);

-- The in-app inbox: what a user who was offline sees later.
CREATE TABLE notifications (
    id         uuid        PRIMARY KEY,
    user_id    text        NOT NULL,
    firing_id  uuid        NOT NULL REFERENCES firings (id) ON DELETE CASCADE,
    rule_id    uuid        NOT NULL,
    title      text        NOT NULL,
    body       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at    timestamptz
);
CREATE INDEX notifications_user ON notifications (user_id, created_at DESC, id DESC);
CREATE INDEX notifications_unread ON notifications (user_id, created_at DESC, id DESC)
    WHERE read_at IS NULL;

-- The transactional outbox (aether_common.events.outbox_pg.OUTBOX_DDL).
CREATE TABLE IF NOT EXISTS event_outbox (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   text NOT NULL,
    topic      text NOT NULL,
    envelope   bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX IF NOT EXISTS event_outbox_unsent ON event_outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS event_outbox_sent_at ON event_outbox (sent_at)
    WHERE sent_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS event_outbox_relay (
    id        int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    listening boolean NOT NULL DEFAULT true
);
INSERT INTO event_outbox_relay (id) VALUES (1) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION event_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(2628869848);  -- NOTIFY_GATE_KEY
    IF (SELECT listening FROM event_outbox_relay WHERE id = 1) THEN
        PERFORM pg_notify('event_outbox', '');
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER event_outbox_notify AFTER INSERT ON event_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION event_outbox_notify();

-- Event ids the consumer handled (aether_common.events.idempotency.PROCESSED_EVENTS_DDL).
CREATE TABLE IF NOT EXISTS processed_events (
    consumer_group text NOT NULL,
    event_id       text NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_at ON processed_events (processed_at);
