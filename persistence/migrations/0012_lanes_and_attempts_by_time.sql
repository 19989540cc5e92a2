-- The Monitor counts the last five minutes' attempts every few seconds: by time, not by reading
-- the whole attempt log (which only grows). Lanes (the bulk queues) need no schema: a
-- notification's `priority` says its lane.
CREATE INDEX delivery_attempts_finished ON delivery_attempts (finished_at);
