-- Consumer groups: membership, subscriptions and assignments, kept by the
-- group coordinator of whichever agent a member talks to.
-- Partition sets are stored as "topic:partition" lists joined by ','
-- (topic names cannot hold ':' or ',').

CREATE TABLE consumer_groups (
    group_id         TEXT    PRIMARY KEY,
    group_epoch      INTEGER NOT NULL,
    assignment_epoch INTEGER NOT NULL,
    created_at_ms    INTEGER NOT NULL
);

CREATE TABLE group_members (
    group_id           TEXT    NOT NULL REFERENCES consumer_groups (group_id) ON DELETE CASCADE,
    member_id          TEXT    NOT NULL,
    member_epoch       INTEGER NOT NULL,
    client_id          TEXT    NOT NULL,
    subscription       TEXT    NOT NULL,
    session_timeout_ms INTEGER NOT NULL,
    last_heartbeat_ms  INTEGER NOT NULL,
    target             TEXT    NOT NULL,
    owned              TEXT    NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
