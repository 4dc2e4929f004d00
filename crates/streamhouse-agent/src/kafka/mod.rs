//! The Kafka wire protocol: a second front door of the agent, beside gRPC,
//! over the same pipeline, reader and stores.
//!
//! ```text
//! Kafka client ──TCP──▶ connection (frames, in-order answers)
//!                          └─▶ bounds (array counts) ─▶ dispatch (decode, version checks)
//!                              ├─ api_versions, metadata, cluster, coordinator
//!                              ├─ produce ─▶ crate::produce (same validation as gRPC)
//!                              ├─ fetch   ─▶ Reader (stored batches, byte for byte)
//!                              ├─ list_offsets, init_producer_id, offsets
//!                              ├─ transactions ─▶ crate::transactions (markers, ends)
//!                              ├─ transaction_admin (list and describe)
//!                              ├─ consumer_groups, consumer_group_describe
//!                              │    (KIP-848 ─▶ the store's group coordinator)
//!                              ├─ delete_records (log start)
//!                              ├─ classic_groups (JoinGroup, SyncGroup, Heartbeat, LeaveGroup)
//!                              ├─ group_admin (ListGroups, DescribeGroups, DeleteGroups, OffsetDelete)
//!                              ├─ admin (topics), configs
//!                              └─ acl_admin (ACLs), user_admin (SCRAM users)
//!                          every handler behind authz / authz_groups (ACLs)
//!                          answers ─▶ metrics (by API and error code)
//! ```
//!
//! Every live agent of the group with a Kafka listener is a broker, known
//! by the stable node id the metadata store gave its agent id
//! ([`brokers`]); any agent serves any partition, so a partition's leader
//! is only a deterministic choice that spreads clients over the agents.
//!
//! Serving another API takes: a module with its handler and `VERSIONS`
//! (versions the codec encodes without refusing a field that is set: the
//! codec rejects non-default fields a version lacks), its layout in
//! [`bounds`] when its request holds arrays, an arm in [`dispatch`] and an
//! entry in `dispatch::SERVED` (which ApiVersions advertises), an
//! [`ErrorCodes`](metrics::ErrorCodes) impl, and a request in the
//! `every_served_version_answers` test (`tests/kafka_frames.rs`), which
//! sends every advertised version.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use streamhouse_metadata::MetadataStore;
use streamhouse_storage::{Reader, WritePipeline};
use tokio::sync::watch;

use crate::service::RequestLimits;

mod acl_admin;
mod admin;
mod api_versions;
mod authz;
mod authz_groups;
mod bounds;
mod brokers;
mod classic_groups;
mod cluster;
mod configs;
mod connection;
mod consumer_group_describe;
mod consumer_groups;
mod coordinator;
mod delete_records;
mod dispatch;
mod errors;
mod fetch;
mod group_admin;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod metrics;
mod offsets;
mod produce;
mod sasl;
mod topic_ids;
mod transaction_admin;
mod transactions;
mod user_admin;

pub(crate) use connection::serve;

/// What every Kafka request handler reaches: the agent's stores and
/// settings.
pub(crate) struct Broker {
    pub metadata: Arc<dyn MetadataStore>,
    pub pipeline: Arc<WritePipeline>,
    pub reader: Arc<Reader>,
    /// Where transaction markers are written.
    pub store: Arc<dyn object_store::ObjectStore>,
    /// Changes on every commit of this agent's pipeline.
    pub commits: watch::Receiver<u64>,
    pub limits: RequestLimits,
    /// Agents whose heartbeat is older are not brokers.
    pub agent_ttl: Duration,
    /// The agent group whose agents are the brokers.
    pub group: String,
    /// This agent's zone: Fetch sends clients of another zone to an agent
    /// of theirs.
    pub zone: Option<String>,
    pub shutting_down: Arc<AtomicBool>,
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    /// Open connections by protocol; the listener counts its own.
    pub connections: Arc<crate::connections::Connections>,
    /// How often consumer group members are told to heartbeat.
    pub group_heartbeat_interval: Duration,
    /// A KIP-848 member missing heartbeats this long leaves its group.
    pub group_session_timeout: Duration,
    /// How long the first join phase of a classic group without members
    /// waits for more members.
    pub group_initial_rebalance_delay: Duration,
    /// Users, ACLs and the checks made with them.
    pub auth: Arc<crate::auth::Auth>,
}
