//! StreamHouse client: the [`Producer`] (key partitioning compatible with
//! Kafka, batching, LZ4, retries with backoff, idempotence, agent discovery
//! with failover), the [`Consumer`] (poll, consumer groups with incremental
//! rebalancing, offset commits) and [`Admin`] for topics and groups.
//!
//! Agents are discovered through the metadata store
//! ([`ProducerBuilder::metadata_store`]) or through any agent
//! ([`ProducerBuilder::bootstrap`]).

mod admin;
mod backoff;
mod cluster;
mod consumer;
mod error;
pub mod partitioner;
mod producer;
mod security;

pub use admin::{
    Admin, AgentConnections, AgentDescription, GroupInfo, GroupMemberInfo, OffsetSpec,
    PartitionDescription, TopicDescription,
};
pub use consumer::{
    AutoOffsetReset, Consumer, ConsumerBuilder, ConsumerConfig, ConsumerGroupMetadata,
    ConsumerRecord, IsolationLevel, RebalanceListener,
};
pub use error::{Error, Result};
pub use producer::{
    DeliveryFuture, Producer, ProducerBuilder, ProducerConfig, ProducerRecord, SendResult,
};
pub use security::Security;
pub use streamhouse_core::{Compression, Header};
pub use streamhouse_metadata::TopicPartition;
pub use streamhouse_proto::ErrorCode;
