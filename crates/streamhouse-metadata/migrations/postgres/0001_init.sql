-- StreamHouse metadata schema (PostgreSQL). Keep in step with ../sqlite.

CREATE TABLE topics (
    topic_id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- never reused
    name            TEXT   NOT NULL UNIQUE,
    partition_count BIGINT NOT NULL,
    retention_ms    BIGINT,
    created_at_ms   BIGINT NOT NULL
);

CREATE TABLE topic_configs (
    topic_id BIGINT NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
    key      TEXT   NOT NULL,
    value    TEXT   NOT NULL,
    PRIMARY KEY (topic_id, key)
);

CREATE TABLE partitions (
    topic_id         BIGINT NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
    partition_id     BIGINT NOT NULL,
    next_offset      BIGINT NOT NULL DEFAULT 0,
    log_start_offset BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (topic_id, partition_id)
);

CREATE TABLE objects (
    object_key    TEXT   PRIMARY KEY,
    size_bytes    BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE segments (
    topic_id      BIGINT NOT NULL,
    partition_id  BIGINT NOT NULL,
    base_offset   BIGINT NOT NULL,
    last_offset   BIGINT NOT NULL,
    record_count  BIGINT NOT NULL,
    object_key    TEXT   NOT NULL REFERENCES objects (object_key),
    byte_start    BIGINT NOT NULL,
    byte_length   BIGINT NOT NULL,
    min_timestamp BIGINT NOT NULL,
    max_timestamp BIGINT NOT NULL,
    PRIMARY KEY (topic_id, partition_id, base_offset),
    FOREIGN KEY (topic_id, partition_id) REFERENCES partitions (topic_id, partition_id) ON DELETE CASCADE
);
CREATE INDEX segments_by_object ON segments (object_key);

CREATE TABLE group_offsets (
    group_id         TEXT   NOT NULL,
    topic_id         BIGINT NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
    partition_id     BIGINT NOT NULL,
    committed_offset BIGINT NOT NULL,
    metadata         TEXT,
    committed_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (group_id, topic_id, partition_id)
);

CREATE TABLE agents (
    agent_id        TEXT   PRIMARY KEY,
    agent_group     TEXT   NOT NULL,
    address         TEXT   NOT NULL,
    zone            TEXT,
    started_at_ms   BIGINT NOT NULL,
    heartbeat_at_ms BIGINT NOT NULL
);
CREATE INDEX agents_by_group ON agents (agent_group);
