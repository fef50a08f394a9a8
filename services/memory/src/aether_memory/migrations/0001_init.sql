-- The memory service's records: PostgreSQL is the source of truth, Qdrant the index (one
-- collection per namespace; point id = uuid5 of namespace, owner scope and id).
CREATE TABLE memory_records (
    namespace   text        NOT NULL,
    -- The owner for "memories" (ids are per owner); '' for the shared namespaces.
    owner_scope text        NOT NULL,
    id          text        NOT NULL,
    point_id    uuid        NOT NULL,
    -- The owner ("memories"), the writer ("knowledge"), the sender ("chat").
    user_id     text        NOT NULL,
    room_id     text        NOT NULL DEFAULT '',
    text        text        NOT NULL,
    -- What the stored vector was computed from: unchanged text is not embedded again.
    text_sha256 bytea       NOT NULL,
    metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (namespace, owner_scope, id)
);
CREATE UNIQUE INDEX memory_records_point ON memory_records (point_id);
-- Erasure of a deleted account.
CREATE INDEX memory_records_user ON memory_records (user_id);

-- Event ids the consumers handled (aether_common.events.PgIdempotencyStore).
CREATE TABLE IF NOT EXISTS processed_events (
    consumer_group text NOT NULL,
    event_id       text NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_at ON processed_events (processed_at);
