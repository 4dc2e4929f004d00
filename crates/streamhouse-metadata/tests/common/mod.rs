//! What the suites run against every backend share: the backends
//! (SQLite in a temporary file, PostgreSQL in a fresh schema per test) and
//! the macro that runs each test on both.
#![allow(dead_code)]

use std::sync::Arc;

use streamhouse_metadata::*;

/// A backend under test; `open_again` opens a second, independent store on
/// the same database, as a second process would.
pub struct Backend {
    pub store: Arc<dyn MetadataStore>,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    pub async fn open_again(&self) -> Arc<dyn MetadataStore> {
        open(&self.url).await.unwrap()
    }
}

pub async fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("metadata.db").display());
    Some(Backend {
        store: Arc::new(SqliteMetadataStore::new(&url).await.unwrap()),
        url,
        _dir: Some(dir),
    })
}

pub async fn postgres() -> Option<Backend> {
    let url = streamhouse_metadata::testing::postgres_url().await?;
    Some(Backend {
        store: Arc::new(PostgresMetadataStore::new(&url).await.unwrap()),
        url,
        _dir: None,
    })
}

/// Runs every named `async fn(&Backend)` on SQLite and on PostgreSQL.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let backend = super::common::sqlite().await.unwrap();
                    super::$name(&backend).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(backend) = super::common::postgres().await else { return };
                    super::$name(&backend).await;
                }
            )*
        }
    };
}
