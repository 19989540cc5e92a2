-- API keys carry a scope (issue 12): 'send' posts notifications and reads the ones it created;
-- 'admin' does everything (users, templates, dead letters, system, metrics, the console).
-- Every key made before scopes existed could do everything: it becomes 'admin', so nothing that
-- works today breaks. A new key names its scope (`clarion apikey create NAME --scope ...`).
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin'
    CHECK (scope IN ('send', 'admin'));
ALTER TABLE api_keys ALTER COLUMN scope DROP DEFAULT;

-- A send key lists only its own notifications, newest first (created_by: migration 0007).
CREATE INDEX notifications_created_by ON notifications (created_by, created_at DESC);
