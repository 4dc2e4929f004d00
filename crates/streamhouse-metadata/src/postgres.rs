//! The PostgreSQL backend for production: several agents share one
//! database. Write transactions run at READ COMMITTED; the log commit's
//! `UPDATE … RETURNING` on partition rows takes row locks in a fixed order,
//! so concurrent commits serialize per partition without deadlocks.

use std::str::FromStr;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Metadata in a PostgreSQL database.
pub type PostgresMetadataStore = crate::sql::SqlStore<Postgres>;

const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init.sql",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_idempotent_producers.sql",
        include_str!("../migrations/postgres/0002_idempotent_producers.sql"),
    ),
    (
        "0003_consumer_groups.sql",
        include_str!("../migrations/postgres/0003_consumer_groups.sql"),
    ),
    (
        "0004_transactions.sql",
        include_str!("../migrations/postgres/0004_transactions.sql"),
    ),
    (
        "0005_job_leases.sql",
        include_str!("../migrations/postgres/0005_job_leases.sql"),
    ),
    (
        "0006_producer_bump_retries.sql",
        include_str!("../migrations/postgres/0006_producer_bump_retries.sql"),
    ),
    (
        "0007_group_assignment_topics.sql",
        include_str!("../migrations/postgres/0007_group_assignment_topics.sql"),
    ),
    (
        "0008_object_gc_claims.sql",
        include_str!("../migrations/postgres/0008_object_gc_claims.sql"),
    ),
    (
        "0009_agent_node_ids.sql",
        include_str!("../migrations/postgres/0009_agent_node_ids.sql"),
    ),
    (
        "0010_classic_groups.sql",
        include_str!("../migrations/postgres/0010_classic_groups.sql"),
    ),
    (
        "0011_group_assignors.sql",
        include_str!("../migrations/postgres/0011_group_assignors.sql"),
    ),
    (
        "0012_acls_and_scram.sql",
        include_str!("../migrations/postgres/0012_acls_and_scram.sql"),
    ),
];

impl PostgresMetadataStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db?sslmode=…`) and
    /// applies pending migrations (under PostgreSQL's advisory lock, so
    /// agents starting together apply them once).
    pub async fn new(url: &str) -> crate::Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(|e| crate::Error::InvalidUrl {
            url: streamhouse_core::names::redact_url(url),
            reason: e.to_string(),
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(crate::Error::db("connecting to PostgreSQL"))?;
        crate::migrator(MIGRATIONS)
            .run(&pool)
            .await
            .map_err(crate::Error::Migrate)?;
        Ok(PostgresMetadataStore {
            write: pool.clone(),
            read: pool,
        })
    }
}
