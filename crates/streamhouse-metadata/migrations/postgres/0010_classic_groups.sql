-- Kafka classic consumer groups (JoinGroup/SyncGroup), kept by whichever
-- agent a member talks to. One row per group: its whole state (phase,
-- generation, members with their protocols and assignments) encoded by
-- the store and written in one transaction per operation. `live_until_ms`
-- is the database time after which every member's session has expired
-- (0 when the group has no members); `member_count` its member count.
CREATE TABLE classic_groups (
    group_id      TEXT   PRIMARY KEY,
    state         TEXT   NOT NULL,
    member_count  BIGINT NOT NULL,
    live_until_ms BIGINT NOT NULL
);
