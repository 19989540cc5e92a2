-- Dead letters: deliveries that failed for good (permanent error, or out of attempts), kept for
-- operators to review, replay or discard. failed.queue holds the broker's copy for 24 h.
CREATE TABLE dead_letters (
    dead_letter_id  BIGSERIAL PRIMARY KEY,
    notification_id UUID NOT NULL,
    channel         TEXT NOT NULL,
    message         JSONB NOT NULL,
    attempts        INTEGER NOT NULL,
    error_code      TEXT,
    error           TEXT,
    state           TEXT NOT NULL DEFAULT 'dead',  -- dead, replayed, discarded
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at     TIMESTAMPTZ
);
CREATE INDEX dead_letters_state_created ON dead_letters (state, created_at DESC);
CREATE INDEX dead_letters_notification ON dead_letters (notification_id);

-- When a delivery waiting for a retry is due (shown in the notification's status).
ALTER TABLE deliveries ADD COLUMN next_attempt_at TIMESTAMPTZ;
