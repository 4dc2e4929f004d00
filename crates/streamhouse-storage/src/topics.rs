//! A cache of topic names to topic ids, partition counts and configs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use streamhouse_metadata::{MetadataStore, Topic};

use crate::error::{Error, Result};

/// How long a cached topic is used before it is read again, so config
/// changes made through other agents are seen within this bound.
const TOPIC_TTL: Duration = Duration::from_secs(2);

/// Resolves topic names through the metadata store, caching the answer.
/// An entry is refreshed after [`TOPIC_TTL`], when a partition beyond its
/// count is asked for, and when it is invalidated (a commit found the
/// topic deleted, or this process altered it).
pub(crate) struct TopicCache {
    metadata: Arc<dyn MetadataStore>,
    topics: RwLock<HashMap<String, (Arc<Topic>, Instant)>>,
}

impl TopicCache {
    pub(crate) fn new(metadata: Arc<dyn MetadataStore>) -> Self {
        TopicCache {
            metadata,
            topics: RwLock::default(),
        }
    }

    /// The topic, checked to have `partition`.
    pub(crate) async fn resolve(&self, name: &str, partition: u32) -> Result<Arc<Topic>> {
        let cached = self
            .topics
            .read()
            .expect("topic cache lock")
            .get(name)
            .cloned();
        if let Some((t, read_at)) = cached
            && partition < t.partition_count
            && read_at.elapsed() < TOPIC_TTL
        {
            return Ok(t);
        }
        let Some(topic) = self.metadata.get_topic(name).await? else {
            self.invalidate(name);
            return Err(Error::TopicNotFound(name.to_string()));
        };
        let topic = Arc::new(topic);
        self.topics
            .write()
            .expect("topic cache lock")
            .insert(name.to_string(), (topic.clone(), Instant::now()));
        if partition >= topic.partition_count {
            return Err(Error::PartitionNotFound {
                topic: name.to_string(),
                partition,
                partition_count: topic.partition_count,
            });
        }
        Ok(topic)
    }

    pub(crate) fn invalidate(&self, name: &str) {
        self.topics.write().expect("topic cache lock").remove(name);
    }
}
