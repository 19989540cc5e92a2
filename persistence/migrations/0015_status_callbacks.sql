-- Status callbacks to the caller (README "Status callbacks"): an API key registers a URL and a
-- secret; every status change of a notification that key created is POSTed there, signed,
-- in order per notification, retried for a day, then dead-lettered.

-- One endpoint per principal ("key:<name>"). The secret signs each callback; it is read only by
-- the Callbacks actor, never logged and never carried in an actor message.
CREATE TABLE callback_endpoints (
    principal   TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Each status change to report, in the order it happened (callback_id), and how its delivery
-- is going: pending (due at next_attempt_at, leased while a POST is in flight), delivered,
-- dead (out of time: a dead letter of channel 'callback'), or cancelled (the endpoint was
-- removed).
CREATE TABLE status_callbacks (
    callback_id      BIGSERIAL PRIMARY KEY,
    principal        TEXT NOT NULL,
    notification_id  UUID NOT NULL,
    kind             TEXT NOT NULL,              -- notification | channel
    channel          TEXT,                       -- for kind = channel
    status           TEXT NOT NULL,
    previous_status  TEXT,
    error_code       TEXT,
    occurred_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    state            TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    give_up_at       TIMESTAMPTZ,                -- set by the first attempt: then + the retry window
    leased_by        TEXT,
    leased_until     TIMESTAMPTZ,
    last_error       TEXT,
    delivered_at     TIMESTAMPTZ
);
-- The head of each notification's queue of pending changes, found by notification.
CREATE INDEX status_callbacks_pending ON status_callbacks (notification_id, callback_id)
    WHERE state = 'pending';
CREATE INDEX status_callbacks_notification ON status_callbacks (notification_id, callback_id);

-- Written by triggers, so that no code path that changes a status can forget a callback, in
-- the transaction that makes the change. Statement-level, with the changed rows as transition
-- tables: one INSERT ... SELECT per statement whatever its rows. Row-level PL/pgSQL made
-- recording an outcome 2.6× slower once any endpoint existed; these add 2 % with none, 8 % with
-- other keys' endpoints, 26 % when the two callbacks are written (bench/callback_triggers.py).
CREATE FUNCTION clarion_delivery_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM callback_endpoints) THEN
        RETURN NULL;
    END IF;
    -- In order per notification: two channels of one notification recorded at once must take
    -- their callback ids in the order they commit, so the second waits here for the first
    -- (the lock its transaction takes later anyway, deliveries before notifications).
    PERFORM 1 FROM notifications AS n
      JOIN callback_endpoints AS e ON e.principal = n.created_by
     WHERE n.notification_id IN (SELECT nr.notification_id FROM new_rows AS nr
                                   JOIN old_rows AS o
                                     ON (o.notification_id, o.channel)
                                      = (nr.notification_id, nr.channel)
                                  WHERE nr.status IS DISTINCT FROM o.status)
     ORDER BY n.notification_id FOR NO KEY UPDATE OF n;
    INSERT INTO status_callbacks (principal, notification_id, kind, channel, status,
                                  previous_status, error_code)
    SELECT e.principal, nr.notification_id, 'channel', nr.channel, nr.status, o.status,
           nr.error_code
      FROM new_rows AS nr
      JOIN old_rows AS o ON (o.notification_id, o.channel) = (nr.notification_id, nr.channel)
      JOIN notifications AS n ON n.notification_id = nr.notification_id
      JOIN callback_endpoints AS e ON e.principal = n.created_by
     WHERE nr.status IS DISTINCT FROM o.status
     ORDER BY nr.notification_id, nr.channel;
    RETURN NULL;
END $$;

CREATE TRIGGER deliveries_status_callbacks AFTER UPDATE ON deliveries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clarion_delivery_status_changed();

CREATE FUNCTION clarion_notification_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM callback_endpoints) THEN
        RETURN NULL;
    END IF;
    INSERT INTO status_callbacks (principal, notification_id, kind, status, previous_status)
    SELECT e.principal, nr.notification_id, 'notification', nr.status, o.status
      FROM new_rows AS nr
      JOIN old_rows AS o ON o.notification_id = nr.notification_id
      JOIN callback_endpoints AS e ON e.principal = nr.created_by
     WHERE nr.status IS DISTINCT FROM o.status
     ORDER BY nr.notification_id;
    RETURN NULL;
END $$;

CREATE TRIGGER notifications_status_callbacks AFTER UPDATE ON notifications
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clarion_notification_status_changed();
