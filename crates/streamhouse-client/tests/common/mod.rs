//! In-process agents on real stores (SQLite + a local directory) for the
//! client's integration tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use streamhouse_agent::{Agent, AgentConfig, RunningAgent};
use streamhouse_core::{Header, RecordBatch};
use streamhouse_metadata::{MetadataStore, TopicConfig};
use streamhouse_storage::{Reader, ReaderConfig, S3Options, open_object_store};

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub metadata: Arc<dyn MetadataStore>,
    pub store: Arc<dyn ObjectStore>,
}

/// A record as read back from storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl TestCluster {
    pub async fn new() -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let metadata = streamhouse_metadata::open(&format!(
            "sqlite://{}",
            dir.path().join("metadata.db").display()
        ))
        .await
        .unwrap();
        let store = open_object_store(
            &format!("file://{}", dir.path().join("objects").display()),
            &S3Options::default(),
        )
        .unwrap();
        TestCluster {
            dir,
            metadata,
            store,
        }
    }

    pub fn agent_config(&self, group: &str) -> AgentConfig {
        let mut config = AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            group: group.to_string(),
            ..AgentConfig::default()
        };
        config.pipeline.linger = Duration::from_millis(2);
        config
    }

    pub async fn agent(&self, group: &str) -> RunningAgent {
        self.agent_on(group, self.store.clone()).await
    }

    pub async fn agent_on(&self, group: &str, store: Arc<dyn ObjectStore>) -> RunningAgent {
        Agent::start_with(self.agent_config(group), self.metadata.clone(), store)
            .await
            .unwrap()
    }

    pub async fn topic(&self, name: &str, partitions: u32) {
        self.metadata
            .create_topic(TopicConfig {
                name: name.to_string(),
                partition_count: partitions,
                retention_ms: None,
                config: HashMap::new(),
            })
            .await
            .unwrap();
    }

    /// Every record of a partition, read back from storage.
    pub async fn read(&self, topic: &str, partition: u32) -> Vec<Stored> {
        let reader = Reader::new(
            self.store.clone(),
            self.metadata.clone(),
            None,
            ReaderConfig::default(),
        );
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let r = reader.read(topic, partition, at, 1 << 20).await.unwrap();
            if r.batches.is_empty() {
                return out;
            }
            for bytes in r.batches {
                let batch = RecordBatch::decode(&bytes).unwrap();
                for (offset, timestamp, rec) in batch.iter() {
                    if offset >= at {
                        out.push(Stored {
                            offset,
                            timestamp,
                            key: rec.key.clone(),
                            value: rec.value.clone(),
                            headers: rec.headers.clone(),
                        });
                    }
                }
                at = batch.base_offset + i64::from(batch.last_offset_delta) + 1;
            }
        }
    }
}
