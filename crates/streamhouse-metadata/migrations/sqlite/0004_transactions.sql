-- Transactions: producers with a transactional id, their open transaction,
-- the partitions it wrote (the first offset of each holds the partition's
-- last stable offset), its pending offset commits, and aborted ranges that
-- read_committed consumers skip.

ALTER TABLE producers ADD COLUMN transactional_id TEXT;
ALTER TABLE producers ADD COLUMN transaction_timeout_ms INTEGER NOT NULL DEFAULT 60000;
-- The epoch of the last ended transaction and whether it committed, so a
-- retried end-transaction is answered without touching a later one.
ALTER TABLE producers ADD COLUMN last_end_epoch INTEGER;
ALTER TABLE producers ADD COLUMN last_end_committed INTEGER;
CREATE UNIQUE INDEX producers_by_transactional_id ON producers (transactional_id);

CREATE TABLE open_transactions (
    producer_id    INTEGER PRIMARY KEY,
    producer_epoch INTEGER NOT NULL,
    started_at_ms  INTEGER NOT NULL
);

CREATE TABLE transaction_partitions (
    producer_id  INTEGER NOT NULL,
    topic_id     INTEGER NOT NULL,
    partition_id INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    PRIMARY KEY (producer_id, topic_id, partition_id),
    FOREIGN KEY (topic_id, partition_id) REFERENCES partitions (topic_id, partition_id) ON DELETE CASCADE
);
CREATE INDEX transaction_partitions_by_partition ON transaction_partitions (topic_id, partition_id);

CREATE TABLE transaction_offsets (
    producer_id      INTEGER NOT NULL,
    group_id         TEXT    NOT NULL,
    topic_id         INTEGER NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
    partition_id     INTEGER NOT NULL,
    committed_offset INTEGER NOT NULL,
    metadata         TEXT,
    PRIMARY KEY (producer_id, group_id, topic_id, partition_id)
);

CREATE TABLE aborted_transactions (
    topic_id     INTEGER NOT NULL,
    partition_id INTEGER NOT NULL,
    producer_id  INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset  INTEGER NOT NULL,
    PRIMARY KEY (topic_id, partition_id, first_offset, producer_id),
    FOREIGN KEY (topic_id, partition_id) REFERENCES partitions (topic_id, partition_id) ON DELETE CASCADE
);
