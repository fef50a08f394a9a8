-- The AI service's own database: per-request usage and its daily aggregate, conversations and
-- their messages, each user's preferences, async jobs, the event outbox and the consumers'
-- processed event ids. User ids are auth's ids, kept as text (this database holds no users).

-- One row per answered request (all replicas): the source of GetPerformance and of the event.
CREATE TABLE ai_requests (
    request_id        text PRIMARY KEY,
    user_id           text NOT NULL,
    conversation_id   text NOT NULL DEFAULT '',
    kind              text NOT NULL,
    mode              text NOT NULL,
    model             text NOT NULL,
    prompt_tokens     integer NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL CHECK (completion_tokens >= 0),
    cost_usd          double precision NOT NULL CHECK (cost_usd >= 0),
    latency_ms        integer NOT NULL CHECK (latency_ms >= 0),
    first_token_ms    integer NOT NULL CHECK (first_token_ms >= 0),
    cached            boolean NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ai_requests_created_at ON ai_requests (created_at);
CREATE INDEX ai_requests_user ON ai_requests (user_id, created_at);

-- Per user, per UTC day, per model: what GetUsage reads (no scan of the request rows).
CREATE TABLE ai_usage_daily (
    user_id           text NOT NULL,
    day               date NOT NULL,
    model             text NOT NULL,
    requests          integer NOT NULL,
    cached_requests   integer NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cost_usd          double precision NOT NULL,
    PRIMARY KEY (user_id, day, model)
);

CREATE TABLE ai_conversations (
    id            uuid PRIMARY KEY,
    user_id       text NOT NULL,
    title         text NOT NULL,
    mode          text NOT NULL,
    message_count integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- ListConversations: a user's most recently updated first, paged by updated_at.
CREATE INDEX ai_conversations_user_updated ON ai_conversations (user_id, updated_at DESC);

CREATE TABLE ai_messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES ai_conversations (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('user', 'assistant')),
    content         text NOT NULL,
    mode            text NOT NULL DEFAULT '',
    model           text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ai_messages_conversation ON ai_messages (conversation_id, id);

CREATE TABLE ai_preferences (
    user_id    text PRIMARY KEY,
    mode       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Async generation. `request` and `usage` are serialized aether.ai.v1 messages. A claimed job
-- holds a lease (`lease_token`, `lease_until`): a replica that crashed lets it expire and another
-- replica claims it again; only the lease holder may finish it.
CREATE TABLE ai_jobs (
    id              uuid PRIMARY KEY,
    user_id         text NOT NULL,
    request         bytea NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    run_after       timestamptz NOT NULL DEFAULT now(),
    lease_token     uuid,
    lease_until     timestamptz,
    answer          text NOT NULL DEFAULT '',
    usage           bytea,
    conversation_id text NOT NULL DEFAULT '',
    error           text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX ai_jobs_queued ON ai_jobs (run_after) WHERE status = 'queued';
CREATE INDEX ai_jobs_leased ON ai_jobs (lease_until) WHERE status = 'running';
CREATE INDEX ai_jobs_user ON ai_jobs (user_id);

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

-- Consumers' handled event ids (aether_common.events.idempotency.PROCESSED_EVENTS_DDL).
CREATE TABLE IF NOT EXISTS processed_events (
    consumer_group text NOT NULL,
    event_id       text NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_at ON processed_events (processed_at);
