-- When each hop of a notification's way happened (received, user resolved, rendered, queued),
-- as epoch seconds; the delivery hops come from delivery_attempts.
ALTER TABLE notifications ADD COLUMN hops JSONB NOT NULL DEFAULT '{}'::jsonb;
