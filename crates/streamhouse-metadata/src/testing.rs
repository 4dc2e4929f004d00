//! Test helpers (feature `testing`): real backends for integration tests.
//!
//! Integration tests that need an external service read its address from
//! the environment. Without it they skip with a message, except under
//! `CI=true`, where a missing service fails the test: CI must run them all.

use std::sync::atomic::{AtomicU32, Ordering};

/// Reads an environment variable naming a test service. `None` (skip) when
/// unset outside CI; panics when unset under `CI=true`.
pub fn service_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{var} is not set and CI=true: run the tests through scripts/test")
        }
        _ => {
            eprintln!("skipping: {var} is not set (scripts/test sets it)");
            None
        }
    }
}

/// A URL for a fresh, empty PostgreSQL schema in the database named by
/// `STREAMHOUSE_TEST_POSTGRES_URL`, so tests never see each other's data.
/// `None` when the variable is unset outside CI.
pub async fn postgres_url() -> Option<String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = service_env("STREAMHOUSE_TEST_POSTGRES_URL")?;
    let schema = format!(
        "sh_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_micros()
    );
    let pool = sqlx::PgPool::connect(&base)
        .await
        .expect("connecting to STREAMHOUSE_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .expect("creating a test schema");
    pool.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}
