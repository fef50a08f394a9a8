-- The worker service's jobs (docs/worker.md). PostgreSQL holds each job's truth; Kafka only
-- carries "run job X" messages, which a consumer turns into a claim here.

CREATE TABLE jobs (
    id               uuid        PRIMARY KEY,
    type             text        NOT NULL,
    params           jsonb       NOT NULL,
    owner_id         text        NOT NULL,
    -- Who asked: the owner, or the service that submitted on the owner's behalf.
    submitted_by     text        NOT NULL,
    priority         integer     NOT NULL DEFAULT 0,
    status           text        NOT NULL
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    progress         integer     NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    progress_message text        NOT NULL DEFAULT '',
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL CHECK (max_attempts >= 1),
    -- The running attempt's token: every write an attempt makes is fenced by it
    -- (WHERE id = $1 AND attempt_token = $2), so an attempt whose lease ran out writes nothing.
    attempt_token    uuid,
    lease_until      timestamptz,
    worker           text        NOT NULL DEFAULT '',
    cancel_requested boolean     NOT NULL DEFAULT false,
    result           jsonb,
    error_code       text        NOT NULL DEFAULT '',
    error_message    text        NOT NULL DEFAULT '',
    -- Failed for good: in the dead-letter list until replayed or purged.
    dead             boolean     NOT NULL DEFAULT false,
    -- A queued job waiting for its retry (no work message sent yet); NULL: due now.
    retry_at         timestamptz,
    -- When its work message was last written to the outbox (the scheduler resends lost ones).
    enqueued_at      timestamptz,
    idempotency_key  text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz
);
-- One job per owner and idempotency key.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner_id, idempotency_key)
    WHERE idempotency_key <> '';
-- ListJobs: an owner's jobs newest first; the quota counts the active ones.
CREATE INDEX jobs_owner ON jobs (owner_id, created_at DESC, id DESC);
CREATE INDEX jobs_owner_active ON jobs (owner_id) WHERE status IN ('queued', 'running');
-- The scheduler: leases that ran out, retries that are due, queued jobs whose message was lost.
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_queued ON jobs (retry_at, enqueued_at) WHERE status = 'queued';
-- ListDeadJobs, newest first.
CREATE INDEX jobs_dead ON jobs (finished_at DESC, id DESC) WHERE dead;
-- Retention.
CREATE INDEX jobs_expiring ON jobs (expires_at) WHERE expires_at IS NOT NULL;

-- Large outputs in S3 (`jobs/<job id>/<name>`); the row is written once the object is stored.
CREATE TABLE job_artifacts (
    job_id       uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    content_type text        NOT NULL,
    size         bigint      NOT NULL,
    s3_key       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);

-- Every change of a job wakes its watchers (WatchJob): the job id on channel `worker_jobs`.
CREATE OR REPLACE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('worker_jobs', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_notify();

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
