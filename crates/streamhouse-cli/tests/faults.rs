//! The fault-injection suite: real `streamhouse agent` processes under a
//! workload of idempotent and transactional producers and a consumer
//! group, while faults are injected on loopback (a TCP proxy in front of
//! each agent and of the S3 server that delays, loses, duplicates and
//! resets; SIGKILL and SIGSTOP of agents; restarts of a private
//! PostgreSQL). A history checker then verifies every acknowledged record
//! is stored once at its offset, offsets are dense, aborted transactions
//! stay invisible to read_committed, no consumer is stuck and no group
//! partition has two owners at once.
//!
//! Short profile by default (CI); `STREAMHOUSE_FAULTS=long` for soak runs:
//! `STREAMHOUSE_FAULTS=long cargo test -p streamhouse-cli --test faults -- --nocapture`.
//! `STREAMHOUSE_FAULTS_SEED=N` replays a run's fault schedule.

#[path = "faults/cluster.rs"]
mod cluster;
#[path = "faults/history.rs"]
mod history;
#[path = "faults/postgres.rs"]
mod postgres;
#[path = "faults/processes.rs"]
mod processes;
#[path = "faults/profile.rs"]
mod profile;
#[path = "faults/proxy.rs"]
mod proxy;
#[path = "faults/scenarios.rs"]
mod scenarios;
#[path = "faults/workload.rs"]
mod workload;
