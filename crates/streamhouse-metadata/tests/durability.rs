//! The embedded store's commits are durable by default: the writer
//! connection really runs with `synchronous=FULL`.

use streamhouse_metadata::SqliteMetadataStore;

#[tokio::test]
async fn sqlite_commits_are_fsynced_unless_asked_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("durable.db");
    let durable = SqliteMetadataStore::new(path.to_str().unwrap())
        .await
        .unwrap();
    assert!(durable.durable_commits().await.unwrap());
    let url = format!("sqlite://{}", dir.path().join("fast.db").display());
    let fast = SqliteMetadataStore::new_without_fsync(&url).await.unwrap();
    assert!(!fast.durable_commits().await.unwrap());
}
