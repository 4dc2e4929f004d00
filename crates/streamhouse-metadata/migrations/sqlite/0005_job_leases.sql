-- Leases for background jobs: one agent at a time runs a given job; a dead
-- agent's lease expires and another agent takes the job over.

CREATE TABLE job_leases (
    job           TEXT    PRIMARY KEY,
    holder        TEXT    NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
