-- The charts service's market data (services/charts/README.md).
--
-- `bars` is partitioned by range on `time`: one partition per calendar year (UTC), created on
-- demand by the writers (repository.ensure_partitions) before they insert, plus a default
-- partition that catches anything else. Queries name only `bars` and filter on
-- (symbol, time), so TimescaleDB can replace the partitioning (a plain `bars` table turned into
-- a hypertable on `time`) without changing them.

-- One row per instrument; its bars are stored at `resolution` and come from `source` only.
CREATE TABLE instruments (
    symbol     text        PRIMARY KEY CHECK (symbol ~ '^[A-Z0-9][A-Z0-9.\-]{0,31}$'),
    name       text        NOT NULL DEFAULT '',
    -- IANA zone of the exchange: daily, weekly and monthly candles align to its midnight.
    timezone   text        NOT NULL,
    resolution text        NOT NULL CHECK (resolution IN ('1m', '5m', '15m', '1h', '4h', '1d')),
    -- A bundled dataset's name, or 'import'.
    source     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- ListSymbols: ticker prefix on the primary key, name search on lower(name); a few thousand
-- rows at most.
CREATE INDEX instruments_name ON instruments (lower(name));

CREATE TABLE bars (
    symbol text             NOT NULL,
    time   timestamptz      NOT NULL,
    open   double precision NOT NULL,
    high   double precision NOT NULL,
    low    double precision NOT NULL,
    close  double precision NOT NULL,
    volume double precision NOT NULL,
    PRIMARY KEY (symbol, time)
) PARTITION BY RANGE (time);
CREATE TABLE bars_default PARTITION OF bars DEFAULT;

-- The bundled datasets loaded into this database: a (name, version) row commits together with
-- its bars, so a second start finds it and loads nothing.
CREATE TABLE datasets (
    name      text        NOT NULL,
    version   text        NOT NULL,
    symbols   integer     NOT NULL,
    bars      bigint      NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

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
