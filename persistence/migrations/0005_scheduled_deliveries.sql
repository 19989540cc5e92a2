-- A delivery held for the user's quiet hours keeps the broker message it will be published as
-- (status 'scheduled', due at next_attempt_at).
ALTER TABLE deliveries ADD COLUMN pending_message JSONB;
CREATE INDEX deliveries_scheduled_due ON deliveries (next_attempt_at) WHERE status = 'scheduled';
