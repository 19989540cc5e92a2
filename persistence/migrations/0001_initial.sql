-- Users, templates (versions x languages), notifications with their per-channel deliveries and
-- every delivery attempt, the local outbox, and hashed API keys.

CREATE TABLE users (
    user_id            TEXT PRIMARY KEY,
    email_address      TEXT UNIQUE,
    phone_number       TEXT,
    preferred_language TEXT NOT NULL DEFAULT 'en',
    preferences        JSONB NOT NULL DEFAULT '{}'::jsonb,
    push_tokens        TEXT[] NOT NULL DEFAULT '{}',
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A template key has versions; each version exists in one or more languages. Versions are
-- immutable: a change is a new row with the next version number.
CREATE TABLE templates (
    template_key TEXT NOT NULL,
    language     TEXT NOT NULL,
    version      INTEGER NOT NULL CHECK (version >= 1),
    subject      TEXT NOT NULL,
    body         TEXT NOT NULL,
    html_body    TEXT,
    push_title   TEXT,
    push_body    TEXT,
    description  TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (template_key, language, version)
);

CREATE TABLE notifications (
    notification_id  UUID PRIMARY KEY,
    user_id          TEXT NOT NULL,
    template_key     TEXT NOT NULL,
    template_version INTEGER NOT NULL,
    language         TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         TEXT NOT NULL DEFAULT 'normal',
    request_id       TEXT,
    -- The database refuses a second notification for one key even if Redis forgot it.
    idempotency_key  TEXT UNIQUE,
    message_data     JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX notifications_user_created ON notifications (user_id, created_at DESC);

-- One row per channel of a notification: what was rendered for it and how it ended.
CREATE TABLE deliveries (
    notification_id     UUID NOT NULL REFERENCES notifications ON DELETE CASCADE,
    channel             TEXT NOT NULL,
    status              TEXT NOT NULL,
    recipient           TEXT,
    content             JSONB NOT NULL DEFAULT '{}'::jsonb,
    attempts            INTEGER NOT NULL DEFAULT 0,
    provider            TEXT,
    provider_message_id TEXT,
    error_code          TEXT,
    error               TEXT,
    queued_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at         TIMESTAMPTZ,
    PRIMARY KEY (notification_id, channel)
);

CREATE TABLE delivery_attempts (
    attempt_id          BIGSERIAL PRIMARY KEY,
    notification_id     UUID NOT NULL,
    channel             TEXT NOT NULL,
    attempt             INTEGER NOT NULL,
    outcome             TEXT NOT NULL,
    provider            TEXT,
    provider_message_id TEXT,
    error_code          TEXT,
    error               TEXT,
    started_at          TIMESTAMPTZ NOT NULL,
    finished_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (notification_id, channel) REFERENCES deliveries ON DELETE CASCADE
);
CREATE INDEX delivery_attempts_notification ON delivery_attempts (notification_id);

-- What the local outbox "delivered": the embedded default when no provider is configured.
CREATE TABLE outbox (
    outbox_id       BIGSERIAL PRIMARY KEY,
    notification_id UUID NOT NULL,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT,
    body            TEXT,
    html_body       TEXT,
    data            JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX outbox_notification ON outbox (notification_id);

-- API keys are stored as SHA-256 digests; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    key_id     BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);
