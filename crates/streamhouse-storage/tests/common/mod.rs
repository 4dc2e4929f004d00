//! The two environments every storage integration test runs in: a local
//! directory with SQLite, and an S3-compatible server with PostgreSQL
//! (`scripts/test` starts both; under CI=true they must exist).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use object_store::ObjectStore;
use streamhouse_metadata::{MetadataStore, TopicConfig};
use streamhouse_storage::{S3Options, open_object_store};

pub struct Env {
    pub store: Arc<dyn ObjectStore>,
    pub metadata: Arc<dyn MetadataStore>,
    pub _dir: Option<tempfile::TempDir>,
}

pub async fn local_sqlite() -> Option<Env> {
    let dir = tempfile::tempdir().unwrap();
    let store = open_object_store(
        &format!("file://{}", dir.path().join("objects").display()),
        &S3Options::default(),
    )
    .unwrap();
    let metadata = streamhouse_metadata::open(&format!(
        "sqlite://{}",
        dir.path().join("metadata.db").display()
    ))
    .await
    .unwrap();
    Some(Env {
        store,
        metadata,
        _dir: Some(dir),
    })
}

pub async fn s3_postgres() -> Option<Env> {
    use streamhouse_metadata::testing::{postgres_url, service_env};
    let endpoint = service_env("STREAMHOUSE_TEST_S3_ENDPOINT")?;
    let bucket = service_env("STREAMHOUSE_TEST_S3_BUCKET")?;
    let pg = postgres_url().await?;
    let prefix = format!(
        "test-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let store = open_object_store(
        &format!("s3://{bucket}/{prefix}"),
        &S3Options {
            endpoint: Some(endpoint),
            region: Some("us-east-1".into()),
            allow_http: Some(true),
            ..S3Options::default()
        },
    )
    .unwrap();
    Some(Env {
        store,
        metadata: streamhouse_metadata::open(&pg).await.unwrap(),
        _dir: None,
    })
}

/// Runs each named test against a local directory with SQLite and against
/// an S3-compatible server with PostgreSQL.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod local_dir_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::common::local_sqlite().await.unwrap()).await;
                }
            )*
        }
        mod s3_server_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(env) = super::common::s3_postgres().await else { return };
                    super::$name(env).await;
                }
            )*
        }
    };
}

pub async fn create(env: &Env, name: &str, partitions: u32) {
    env.metadata
        .create_topic(TopicConfig {
            name: name.into(),
            partition_count: partitions,
            retention_ms: None,
            config: HashMap::new(),
        })
        .await
        .unwrap();
}
