-- The users and templates management API.
--
-- templates.variables: the variable names a template declares (NULL: it declares none).
-- templates.retired_at: set on every row of a retired key. The rows stay, since notifications
-- name their template_key and version; lookups see only rows where it is NULL. A key created
-- again after retirement continues its version numbers, so a number is never reused.
ALTER TABLE templates ADD COLUMN variables TEXT[];
ALTER TABLE templates ADD COLUMN retired_at TIMESTAMPTZ;

-- The live rows: what the hot path's latest-version lookup and the listing read.
CREATE INDEX templates_live ON templates (template_key, language, version DESC)
    WHERE retired_at IS NULL;

-- GET /v1/users lists users in creation order.
CREATE INDEX users_created ON users (created_at, user_id);
