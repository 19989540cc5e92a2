-- The transactional outbox: every message Clarion puts on RabbitMQ is first a row here, committed
-- in the same transaction as the state change it stands for (a notification accepted, an attempt
-- that will be retried, a dead letter, a replay). A relay publishes the rows with publisher
-- confirms and deletes them in one transaction, so a committed row is published at least once
-- whatever fails, and the delivery actors' claims (below) turn "at least once" into "once".
CREATE TABLE broker_outbox (
    message_id  BIGSERIAL PRIMARY KEY,
    exchange    TEXT NOT NULL,      -- '' for the default exchange (the retry ladder, the DLQ)
    routing_key TEXT NOT NULL,
    headers     JSONB NOT NULL DEFAULT '{}'::jsonb,
    body        BYTEA NOT NULL,     -- the exact bytes to publish (JSON)
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The first answer to a request with an idempotency key, so that a replay answered from the
-- database (Redis down or flushed) is byte for byte the first answer's data.
ALTER TABLE notifications ADD COLUMN accepted_reply JSONB;
-- Who asked for the notification (the authenticated principal, e.g. "key:billing").
ALTER TABLE notifications ADD COLUMN created_by TEXT;

-- The attempt a delivery actor has taken on (claimed) before calling the provider: a second copy
-- of the same message (a re-published outbox row, a redelivery after a broker reconnect) finds
-- the attempt claimed and is not sent again. claimed_by names the process; claimed_at lets a
-- claim whose holder died be taken over once it is older than the provider timeout allows.
ALTER TABLE deliveries ADD COLUMN claimed_attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN claimed_by TEXT;
ALTER TABLE deliveries ADD COLUMN claimed_at TIMESTAMPTZ;
