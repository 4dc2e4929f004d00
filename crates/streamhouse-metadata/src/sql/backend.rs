//! What differs between the SQL backends, in one place: the database clock,
//! how a write transaction begins, how a read takes a shared or an update row lock, and
//! how many rows a statement changed.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sqlx::{Database, IntoArguments, Pool, Postgres, Sqlite, Transaction};

/// The placeholder in SQL text for the backend's clock ([`Backend::NOW`]).
const NOW_PLACEHOLDER: &str = "{now}";
/// The placeholder in SQL text, at the end of a `SELECT`, for the
/// backend's shared row lock ([`Backend::FOR_SHARE`]).
const FOR_SHARE_PLACEHOLDER: &str = "{for_share}";

/// A SQL database the metadata store runs on.
pub trait Backend: Database<Arguments: IntoArguments<Self>> {
    /// The database clock as an SQL expression in epoch milliseconds, so
    /// leases, sessions and heartbeats use one clock rather than each
    /// machine's.
    const NOW: &'static str;

    /// The clause that makes a `SELECT` lock the rows it reads against
    /// concurrent updates until the transaction ends (while other readers
    /// may lock them too).
    const FOR_SHARE: &'static str;

    /// The clause that makes a `SELECT` lock the rows it reads for an
    /// update later in the transaction: other writers wait, rows are
    /// locked in the order the `SELECT` returns them.
    const FOR_UPDATE: &'static str;

    /// Begins a transaction that will write.
    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send;

    /// How many rows the statement inserted, updated or deleted.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// This backend's SQL texts with the clock spliced in (see [`sql`]).
    fn spliced() -> &'static Spliced;
}

/// SQL texts with [`Backend::NOW`] spliced in, by their template.
pub struct Spliced(Mutex<BTreeMap<&'static str, &'static str>>);

impl Spliced {
    const fn new() -> Self {
        Spliced(Mutex::new(BTreeMap::new()))
    }
}

/// `template` with every `{now}` replaced by the backend's clock
/// expression and every `{for_share}` by its shared row lock. Each template is spliced once per backend and kept for the
/// life of the process (the templates are a fixed set of literals).
pub(crate) fn sql<DB: Backend>(template: &'static str) -> &'static str {
    let mut texts = DB::spliced()
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    texts.entry(template).or_insert_with(|| {
        let text = template
            .replace(NOW_PLACEHOLDER, DB::NOW)
            .replace(FOR_SHARE_PLACEHOLDER, DB::FOR_SHARE);
        Box::leak(text.into_boxed_str())
    })
}

/// SQLite: the one writer connection takes the database write lock up
/// front with `BEGIN IMMEDIATE` (SQLite has no row locks, so a transaction
/// never fails half-way on a lock upgrade). Holding the write lock, a
/// transaction needs no row locks: `FOR SHARE` and `FOR UPDATE` are empty.
impl Backend for Sqlite {
    const NOW: &'static str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
    const FOR_SHARE: &'static str = "";
    const FOR_UPDATE: &'static str = "";

    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send {
        pool.begin_with("BEGIN IMMEDIATE")
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn spliced() -> &'static Spliced {
        static SPLICED: Spliced = Spliced::new();
        &SPLICED
    }
}

/// PostgreSQL: write transactions run at READ COMMITTED and lock the rows
/// they change; rows a decision rests on but that they do not change are
/// read `FOR SHARE`.
impl Backend for Postgres {
    const NOW: &'static str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
    const FOR_SHARE: &'static str = " FOR SHARE";
    const FOR_UPDATE: &'static str = " FOR UPDATE";

    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send {
        pool.begin()
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn spliced() -> &'static Spliced {
        static SPLICED: Spliced = Spliced::new();
        &SPLICED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_spliced_per_backend_once() {
        let template = "SELECT {now} - x FROM t WHERE y < {now}";
        let sqlite = sql::<Sqlite>(template);
        let postgres = sql::<Postgres>(template);
        assert_eq!(
            sqlite,
            format!("SELECT {0} - x FROM t WHERE y < {0}", Sqlite::NOW)
        );
        assert_eq!(
            postgres,
            format!("SELECT {0} - x FROM t WHERE y < {0}", Postgres::NOW)
        );
        assert!(std::ptr::eq(sqlite, sql::<Sqlite>(template)));
        assert_eq!(sql::<Sqlite>("SELECT 1"), "SELECT 1");
        let locked = "SELECT x FROM t WHERE y = $1{for_share}";
        assert_eq!(sql::<Sqlite>(locked), "SELECT x FROM t WHERE y = $1");
        assert_eq!(
            sql::<Postgres>(locked),
            "SELECT x FROM t WHERE y = $1 FOR SHARE"
        );
    }
}
