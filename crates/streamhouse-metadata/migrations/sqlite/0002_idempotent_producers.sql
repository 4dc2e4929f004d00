-- Idempotent producers: issued ids and epochs, and the last batches of each
-- producer per partition (to answer a retried batch with its offsets).

CREATE TABLE producers (
    producer_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch         INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE producer_batches (
    producer_id    INTEGER NOT NULL,
    topic_id       INTEGER NOT NULL,
    partition_id   INTEGER NOT NULL,
    producer_epoch INTEGER NOT NULL,
    first_sequence INTEGER NOT NULL,
    last_sequence  INTEGER NOT NULL,
    base_offset    INTEGER NOT NULL,
    PRIMARY KEY (producer_id, topic_id, partition_id, base_offset),
    FOREIGN KEY (topic_id, partition_id) REFERENCES partitions (topic_id, partition_id) ON DELETE CASCADE
);
