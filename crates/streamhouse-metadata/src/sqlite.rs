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
];

impl SqliteMetadataStore {
    /// Opens (creating if missing) the database at `path`, a file path or a
    /// `sqlite://PATH` URL, and applies pending migrations.
    pub async fn new(path: &str) -> crate::Result<Self> {
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
            .synchronous(SqliteSynchronous::Full)
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
