-- StreamHouse metadata schema (SQLite). Keep in step with ../postgres.

CREATE TABLE topics (
    topic_id        INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused
    name            TEXT    NOT NULL UNIQUE,
    partition_count INTEGER NOT NULL,
    retention_ms    INTEGER,
    created_at_ms   INTEGER NOT NULL
);

CREATE TABLE topic_configs (
    topic_id INTEGER NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
    key      TEXT    NOT NULL,
    value    TEXT    NOT NULL,
    PRIMARY KEY (topic_id, key)
);

CREATE TABLE partitions (
    topic_id         INTEGER NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
    partition_id     INTEGER NOT NULL,
    next_offset      INTEGER NOT NULL DEFAULT 0,
    log_start_offset INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic_id, partition_id)
);

CREATE TABLE objects (
    object_key    TEXT    PRIMARY KEY,
    size_bytes    INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE segments (
    topic_id      INTEGER NOT NULL,
    partition_id  INTEGER NOT NULL,
    base_offset   INTEGER NOT NULL,
    last_offset   INTEGER NOT NULL,
    record_count  INTEGER NOT NULL,
    object_key    TEXT    NOT NULL REFERENCES objects (object_key),
    byte_start    INTEGER NOT NULL,
    byte_length   INTEGER NOT NULL,
    min_timestamp INTEGER NOT NULL,
    max_timestamp INTEGER NOT NULL,
    PRIMARY KEY (topic_id, partition_id, base_offset),
    FOREIGN KEY (topic_id, partition_id) REFERENCES partitions (topic_id, partition_id) ON DELETE CASCADE
);
CREATE INDEX segments_by_object ON segments (object_key);

CREATE TABLE group_offsets (
    group_id         TEXT    NOT NULL,
    topic_id         INTEGER NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
    partition_id     INTEGER NOT NULL,
    committed_offset INTEGER NOT NULL,
    metadata         TEXT,
    committed_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic_id, partition_id)
);

CREATE TABLE agents (
    agent_id        TEXT    PRIMARY KEY,
    agent_group     TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    zone            TEXT,
    started_at_ms   INTEGER NOT NULL,
    heartbeat_at_ms INTEGER NOT NULL
);
CREATE INDEX agents_by_group ON agents (agent_group);
