-- A stable int32 node id per agent id (the Kafka broker id), assigned on
-- first registration and kept after deregistration, so an agent restarted
-- with the same id gets the same node id.
CREATE TABLE agent_nodes (
    node_id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL UNIQUE
);
-- The `host:port` Kafka clients use for the agent; NULL: no Kafka listener.
ALTER TABLE agents ADD COLUMN kafka_address TEXT;
