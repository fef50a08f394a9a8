-- The live feed (replay.py, feed.py; docs/charts.md "The live feed").

-- Where the replay of each symbol stands: the last tick played (0-3) of `bar_time`, in pass
-- `pass`. Written in the transaction that puts the step's events in the outbox.
CREATE TABLE replay_positions (
    symbol     text        PRIMARY KEY,
    pass       integer     NOT NULL CHECK (pass >= 1),
    bar_time   timestamptz NOT NULL,
    tick       smallint    NOT NULL CHECK (tick BETWEEN 0 AND 3),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The bar a real feed is building per symbol (at the instrument's resolution): a tick of a
-- later bar closes it (bar_closed events), a tick of an earlier one amends a closed bar.
CREATE TABLE feed_open_bars (
    symbol text        PRIMARY KEY REFERENCES instruments (symbol),
    time   timestamptz NOT NULL
);

-- Event ids the feed consumer handled (aether_common.events.idempotency.PROCESSED_EVENTS_DDL).
CREATE TABLE IF NOT EXISTS processed_events (
    consumer_group text NOT NULL,
    event_id       text NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_at ON processed_events (processed_at);
