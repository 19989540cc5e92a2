-- The suppression list (README "Suppression list"): addresses Clarion no longer sends to, each
-- with its reason and what put it there (a provider's event, Twilio's STOP, an operator).
-- Emails are kept lower-cased, numbers in E.164, so one address is one row.
CREATE TABLE suppressions (
    channel         TEXT NOT NULL,             -- email | sms
    address         TEXT NOT NULL,
    reason          TEXT NOT NULL,             -- hard_bounce | invalid_address | spam_report
                                               -- | unsubscribed | manual
    source          TEXT NOT NULL,             -- "sendgrid:<event id>", "twilio:21610", "api"
    notification_id UUID,                      -- the notification whose event put it there
    note            TEXT,
    created_by      TEXT NOT NULL,             -- "provider:sendgrid", "key:<name>", ...
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, address)
);
CREATE INDEX suppressions_newest ON suppressions (created_at DESC);

-- Every removal, kept for good: who took an address off the list, when and why, and the entry
-- as it was.
CREATE TABLE suppression_removals (
    removal_id     BIGSERIAL PRIMARY KEY,
    channel        TEXT NOT NULL,
    address        TEXT NOT NULL,
    reason         TEXT NOT NULL,
    source         TEXT NOT NULL,
    suppressed_at  TIMESTAMPTZ NOT NULL,
    suppressed_by  TEXT NOT NULL,
    removed_by     TEXT NOT NULL,
    why            TEXT NOT NULL,
    removed_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX suppression_removals_address ON suppression_removals (channel, address, removed_at DESC);
CREATE INDEX suppression_removals_newest ON suppression_removals (removed_at DESC);
