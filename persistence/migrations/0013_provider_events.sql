-- What the providers say happened after they accepted a message (SendGrid's Event Webhook):
-- each event once (its provider's id), kept with the delivery it is about, in arrival order.
-- A delivery's status moves on from `sent` to `delivered`, `bounced`, `undelivered` or
-- `complained` (persistence/provider_events.py says which moves are allowed).
CREATE TABLE provider_events (
    event_id        TEXT PRIMARY KEY,          -- "sendgrid:<sg_event_id>"
    provider        TEXT NOT NULL,
    notification_id UUID NOT NULL,
    channel         TEXT NOT NULL,
    event           TEXT NOT NULL,             -- the provider's name for it: delivered, bounce...
    status          TEXT,                      -- the delivery status it implies, if any
    occurred_at     TIMESTAMPTZ NOT NULL,      -- when the provider says it happened
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    detail          JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX provider_events_notification ON provider_events (notification_id, received_at);
