-- The auth service's schema: accounts, sessions (refresh token families), signing keys, MFA,
-- one-time mail tokens, OAuth identities, login history, and the event outbox.

CREATE TABLE users (
    id                  uuid PRIMARY KEY,
    -- Stored normalised (lower case): one account per mailbox whatever the typed case.
    email               text NOT NULL UNIQUE,
    email_verified      boolean NOT NULL DEFAULT false,
    -- NULL for accounts made through an OAuth provider that never set a password.
    password_hash       text,
    display_name        text NOT NULL DEFAULT '',
    plan                text NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'premium', 'admin')),
    role                text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'moderator', 'admin')),
    mfa_enabled         boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz
);

-- A session is one refresh-token family: every rotation stays in it, and re-use of a rotated
-- token revokes it whole. Its id is the `sid` claim of the access tokens it issues.
CREATE TABLE sessions (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    method         text NOT NULL,
    ip             text NOT NULL DEFAULT '',
    user_agent     text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Refresh tokens are opaque; only their SHA-256 is kept. Rotated ones stay until they expire so
-- that their re-use is recognised.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Access-token signing keys (Ed25519). The newest unretired key signs; retired keys keep
-- verifying (and stay in the JWKS) until `verify_until`, when their last token has expired.
CREATE TABLE signing_keys (
    kid             text PRIMARY KEY,
    algorithm       text NOT NULL,
    public_jwk      text NOT NULL,
    -- AES-256-GCM under a key derived from AUTH_KEY_ENCRYPTION_SECRET, the kid as associated data.
    private_key_enc bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz,
    verify_until    timestamptz
);

CREATE TABLE mfa_totp (
    user_id        uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_enc     bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- NULL while enrolment waits for its first code.
    confirmed_at   timestamptz,
    -- The last accepted 30-second step: a code is never accepted twice.
    last_used_step bigint NOT NULL DEFAULT 0
);

CREATE TABLE recovery_codes (
    code_hash bytea PRIMARY KEY,
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at   timestamptz
);
CREATE INDEX recovery_codes_user ON recovery_codes (user_id);

-- Email verification and password reset links: random, stored hashed, single use, expiring.
CREATE TABLE email_tokens (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    email      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);
CREATE INDEX email_tokens_expires ON email_tokens (expires_at);

CREATE TABLE oauth_identities (
    provider  text NOT NULL,
    subject   text NOT NULL,
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email     text NOT NULL DEFAULT '',
    linked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, subject)
);
CREATE INDEX oauth_identities_user ON oauth_identities (user_id);

-- Sign-in history shown in the GDPR export; purged after the retention period.
CREATE TABLE login_history (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    method     text NOT NULL,
    success    boolean NOT NULL,
    reason     text NOT NULL DEFAULT '',
    ip         text NOT NULL DEFAULT '',
    user_agent text NOT NULL DEFAULT ''
);
CREATE INDEX login_history_user ON login_history (user_id, at);
CREATE INDEX login_history_at ON login_history (at);

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
