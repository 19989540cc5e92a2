-- Deliveries are written in the same statement as their notification (notifications.
-- insert_batch), and attempts only for a delivery a delivery actor claimed: the code keeps
-- these references whole. Their foreign-key checks, one trigger call per row, took a third of
-- the accept path's time in PostgreSQL (EXPLAIN ANALYZE of a batch of 500: 11.8 of 33.5 ms) and
-- as much again on the delivery path. Nothing deletes notifications (they are the history), so
-- the cascades they also gave were never used.
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_notification_id_fkey;
ALTER TABLE delivery_attempts DROP CONSTRAINT IF EXISTS delivery_attempts_notification_id_channel_fkey;
