//! The SQL of every metadata operation, written once for both backends.
//!
//! [`SqlStore`] implements every store trait for any [`Backend`]: SQLite and
//! PostgreSQL run the same `$1…$n` statements, and what differs between them
//! (the clock expression, how a write transaction begins, how many rows a
//! statement changed) is given by the backend in `backend.rs`. One file per
//! store trait; the decisions that need no database (sequence checks, batch
//! placement, group membership, retention) are plain functions with their
//! unit tests.
//!
//! Every generic impl carries the same `where` clause: that a connection
//! executes queries, and the parameter and column types the SQL uses
//! (`i64`, `bool`, `String`, `&str` and their `Option`s). Rust does not
//! carry such bounds over from a trait definition, so each impl states them;
//! both backends meet them.

mod acls;
mod agents;
mod backend;
mod classic_codec;
mod classic_state;
mod classic_store;
mod groups;
mod heartbeat;
mod idempotence;
mod log;
mod maintenance;
mod membership;
mod offsets;
mod placement;
mod producers;
mod scram;
mod sequences;
mod topics;
mod transaction_admin;
mod transaction_end;
mod transactions;

use backend::Backend;

/// `objects.gc_state` of a key the object GC claimed that no commit ever
/// recorded: no commit of that key can succeed any more (migration 0008).
const GC_CLAIMED_UNCOMMITTED: i64 = 2;

/// Rows per multi-row INSERT, well under every backend's bind limit.
const INSERT_CHUNK: usize = 500;

/// A write transaction.
type Tx<DB> = sqlx::Transaction<'static, DB>;

/// The metadata store on one SQL database: a pool that writes and a pool
/// that reads (the same pool on PostgreSQL).
pub struct SqlStore<DB: sqlx::Database> {
    pub(crate) write: sqlx::Pool<DB>,
    pub(crate) read: sqlx::Pool<DB>,
}

impl<DB: sqlx::Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            write: self.write.clone(),
            read: self.read.clone(),
        }
    }
}

impl<DB: sqlx::Database> std::fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &DB::NAME)
            .field("write", &self.write)
            .field("read", &self.read)
            .finish()
    }
}

impl<DB: Backend> SqlStore<DB> {
    /// Begins a transaction on the write pool, the backend's way.
    async fn begin_write(&self) -> crate::Result<Tx<DB>> {
        DB::begin_write(&self.write)
            .await
            .map_err(crate::Error::db("beginning write transaction"))
    }
}
