-- The console's charts count accepted deliveries per time bucket (persistence/console_stats.py):
-- a BRIN index on queued_at answers "the last 15 minutes / 24 hours" without a table scan. BRIN,
-- not B-tree: rows arrive in time order, so it stays a few pages and costs the Gateway's
-- inserts next to nothing.
CREATE INDEX deliveries_queued_at_brin ON deliveries USING brin (queued_at);
