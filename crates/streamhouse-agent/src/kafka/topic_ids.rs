//! Kafka topic ids: the UUID every answer that names a topic by id uses
//! (Metadata v10+, ConsumerGroupHeartbeat, ConsumerGroupDescribe), and the
//! way back from such an id to the topic.
//!
//! A topic's UUID is its metadata identity, its numeric id and its creation
//! time, laid out in 16 bytes and masked: stable for the life of the topic,
//! distinct for distinct topics (the layout is one-to-one), and new for a
//! topic deleted and created again under the same name (a new creation
//! time), so a client never takes the new topic's partitions for the old
//! one's. It is never the zero UUID, which Kafka reserves for "no id".

use std::collections::HashMap;

use streamhouse_metadata::Topic;
use uuid::Uuid;

use super::Broker;

/// Spreads the bits so ids do not read as counters; any constant keeps the
/// layout one-to-one. Its high bit makes the zero UUID unreachable: a
/// topic id and a creation time are never negative.
const MASK: [u8; 16] = [
    0x9e, 0x37, 0x79, 0xb9, 0x7f, 0x4a, 0x7c, 0x15, 0xf3, 0x9c, 0xc0, 0x60, 0x5c, 0xed, 0xc8, 0x34,
];

/// The Kafka topic id of `topic`.
pub(super) fn topic_uuid(topic: &Topic) -> Uuid {
    uuid_of(topic.id, topic.created_at_ms)
}

fn uuid_of(id: i64, created_at_ms: i64) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&id.to_be_bytes());
    bytes[8..].copy_from_slice(&created_at_ms.to_be_bytes());
    for (b, m) in bytes.iter_mut().zip(MASK) {
        *b ^= m;
    }
    Uuid::from_bytes(bytes)
}

/// Every existing topic by its Kafka topic id.
pub(super) async fn by_uuid(broker: &Broker) -> streamhouse_metadata::Result<HashMap<Uuid, Topic>> {
    Ok(index(broker.metadata.list_topics().await?))
}

/// `topics` by their Kafka topic ids.
pub(super) fn index(topics: Vec<Topic>) -> HashMap<Uuid, Topic> {
    topics.into_iter().map(|t| (topic_uuid(&t), t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(id: i64, name: &str, created_at_ms: i64) -> Topic {
        Topic {
            id,
            name: name.into(),
            partition_count: 1,
            retention_ms: None,
            config: HashMap::new(),
            created_at_ms,
        }
    }

    #[test]
    fn stable_distinct_and_never_zero() {
        let a = topic(1, "a", 1_700_000_000_000);
        assert_eq!(topic_uuid(&a), topic_uuid(&a.clone()));
        // The name and settings are not the identity.
        let mut renamed = a.clone();
        renamed.name = "other".into();
        renamed.partition_count = 7;
        assert_eq!(topic_uuid(&a), topic_uuid(&renamed));
        // Another topic, or the same name created again, gets another id.
        assert_ne!(
            topic_uuid(&a),
            topic_uuid(&topic(2, "b", 1_700_000_000_000))
        );
        assert_ne!(
            topic_uuid(&a),
            topic_uuid(&topic(1, "a", 1_700_000_000_001))
        );
        assert_ne!(topic_uuid(&topic(0, "z", 0)), Uuid::nil());
        let mut seen = std::collections::HashSet::new();
        for id in 0..200 {
            for created in [0, 1, 1_700_000_000_000, i64::MAX] {
                assert!(seen.insert(uuid_of(id, created)), "{id} {created}");
            }
        }
    }

    #[test]
    fn ids_lead_back_to_their_topics() {
        let topics = vec![topic(1, "a", 10), topic(2, "b", 10), topic(3, "a2", 11)];
        let ids: Vec<Uuid> = topics.iter().map(topic_uuid).collect();
        let found = index(topics);
        assert_eq!(found.len(), 3);
        assert_eq!(found[&ids[1]].name, "b");
        assert!(!found.contains_key(&uuid_of(1, 11)));
    }
}
