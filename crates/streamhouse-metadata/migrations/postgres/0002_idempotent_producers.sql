-- Idempotent producers: issued ids and epochs, and the last batches of each
-- producer per partition (to answer a retried batch with its offsets).

CREATE TABLE producers (
    producer_id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    epoch         BIGINT  NOT NULL,
    created_at_ms BIGINT  NOT NULL
);

CREATE TABLE producer_batches (
    producer_id    BIGINT  NOT NULL,
    topic_id       BIGINT  NOT NULL,
    partition_id   BIGINT  NOT NULL,
    producer_epoch BIGINT  NOT NULL,
    first_sequence BIGINT  NOT NULL,
    last_sequence  BIGINT  NOT NULL,
    base_offset    BIGINT  NOT NULL,
    PRIMARY KEY (producer_id, topic_id, partition_id, base_offset),
    FOREIGN KEY (topic_id, partition_id) REFERENCES partitions (topic_id, partition_id) ON DELETE CASCADE
);
