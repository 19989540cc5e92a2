-- The fingerprint of the request that created a notification under an idempotency key, so that
-- the database alone (Redis down) can tell a replay from a different request reusing the key.
ALTER TABLE notifications ADD COLUMN request_fingerprint TEXT;
