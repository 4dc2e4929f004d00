-- Access control lists in Kafka's model: one row per binding, every field
-- part of the key, so creating an existing binding again changes nothing.
-- Enum fields hold their names ('topic', 'literal', 'describe-configs',
-- 'allow').
CREATE TABLE acls (
    resource_type TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    pattern_type  TEXT NOT NULL,
    principal     TEXT NOT NULL,
    host          TEXT NOT NULL,
    operation     TEXT NOT NULL,
    permission    TEXT NOT NULL,
    PRIMARY KEY (resource_type, resource_name, pattern_type, principal, host,
                 operation, permission)
);

-- SCRAM credentials (RFC 5802), one per user and mechanism (Kafka's
-- mechanism type: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512). Only the salted,
-- derived keys are stored, never a password.
CREATE TABLE scram_credentials (
    user_name  TEXT   NOT NULL,
    mechanism  BIGINT NOT NULL,
    salt       BYTEA  NOT NULL,
    iterations BIGINT NOT NULL,
    stored_key BYTEA  NOT NULL,
    server_key BYTEA  NOT NULL,
    PRIMARY KEY (user_name, mechanism)
);
