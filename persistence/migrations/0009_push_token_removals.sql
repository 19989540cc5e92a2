-- Push tokens FCM called UNREGISTERED, handed by the delivery actors (which may run on hosts
-- without a Users actor) to the Users actor, the only writer of users and of their cache. It
-- takes them on its tick and removes them in the same transaction.
CREATE TABLE push_token_removals (
    user_id    TEXT NOT NULL,
    token      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, token)
);
