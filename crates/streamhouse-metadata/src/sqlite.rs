//! The embedded SQLite backend.
//!
//! WAL mode; one writer connection per process whose transactions start with
//! `BEGIN IMMEDIATE` (SQLite has no row locks: this takes the database write
//! lock up front, so a transaction never fails half-way on an upgrade), and
//! a pool of readers. Several processes on one machine may share the file:
//! the write lock and a busy timeout serialize their commits.

use std::str::FromStr;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Metadata in one SQLite file.
pub type SqliteMetadataStore = crate::sql::SqlStore<Sqlite>;

const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init.sql",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        "0002_idempotent_producers.sql",
        include_str!("../migrations/sqlite/0002_idempotent_producers.sql"),
    ),
    (
        "0003_consumer_groups.sql",
        include_str!("../migrations/sqlite/0003_consumer_groups.sql"),
    ),
    (
        "0004_transactions.sql",
        include_str!("../migrations/sqlite/0004_transactions.sql"),
    ),
    (
        "0005_job_leases.sql",
        include_str!("../migrations/sqlite/0005_job_leases.sql"),
    ),
    (
        "0006_producer_bump_retries.sql",
        include_str!("../migrations/sqlite/0006_producer_bump_retries.sql"),
    ),
    (
        "0007_group_assignment_topics.sql",
        include_str!("../migrations/sqlite/0007_group_assignment_topics.sql"),
    ),
    (
        "0008_object_gc_claims.sql",
        include_str!("../migrations/sqlite/0008_object_gc_claims.sql"),
    ),
    (
        "0009_agent_node_ids.sql",
        include_str!("../migrations/sqlite/0009_agent_node_ids.sql"),
    ),
    (
        "0010_classic_groups.sql",
        include_str!("../migrations/sqlite/0010_classic_groups.sql"),
    ),
    (
        "0011_group_assignors.sql",
        include_str!("../migrations/sqlite/0011_group_assignors.sql"),
    ),
    (
        "0012_acls_and_scram.sql",
        include_str!("../migrations/sqlite/0012_acls_and_scram.sql"),
    ),
];

impl SqliteMetadataStore {
    /// Opens (creating if missing) the database at `path`, a file path or a
    /// `sqlite://PATH` URL, and applies pending migrations.
    ///
    /// Commits are durable: WAL with `synchronous=FULL`, so a commit is on
    /// disk (fsynced) before it returns and a power loss cannot undo an
    /// acknowledged write or hand its offsets to other records.
    pub async fn new(path: &str) -> crate::Result<Self> {
        Self::open(path, SqliteSynchronous::Full).await
    }

    /// [`new`](Self::new) with `synchronous=NORMAL`: commits return before
    /// the WAL is fsynced. Survives a process crash, but a power loss can
    /// undo the last commits, whose records were already acknowledged. For
    /// tests and throwaway data only.
    pub async fn new_without_fsync(path: &str) -> crate::Result<Self> {
        Self::open(path, SqliteSynchronous::Normal).await
    }

    /// Whether commits are fsynced before they return, as the writer
    /// connection reports it (`PRAGMA synchronous` is FULL or EXTRA).
    pub async fn durable_commits(&self) -> crate::Result<bool> {
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.write)
            .await
            .map_err(crate::Error::db("reading PRAGMA synchronous"))?;
        Ok(level >= 2)
    }

    async fn open(path: &str, synchronous: SqliteSynchronous) -> crate::Result<Self> {
        let url = if path.starts_with("sqlite:") {
            path.to_string()
        } else {
            format!("sqlite://{path}")
        };
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(|e| crate::Error::InvalidUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(30));
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| crate::Error::InvalidUrl {
                url: url.clone(),
                reason: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(crate::Error::db("opening SQLite database"))?;
        crate::migrator(MIGRATIONS)
            .run(&write)
            .await
            .map_err(crate::Error::Migrate)?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(crate::Error::db("opening SQLite database"))?;
        Ok(SqliteMetadataStore { write, read })
    }
}
