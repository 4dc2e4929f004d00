//! Values stored in and returned by the metadata store.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{Error, Result};

/// Generated identity of a topic. A deleted and re-created topic gets a new
/// id, so it never sees the old topic's data or offsets.
pub type TopicId = i64;

/// What `create_topic` needs.
///
/// Settings beyond the three typed fields are keys of `config`; the keys
/// accepted are listed in [`TOPIC_CONFIG_KEYS`] and their values validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicConfig {
    pub name: String,
    pub partition_count: u32,
    /// Records older than this many milliseconds may be deleted; `None` keeps
    /// them forever.
    pub retention_ms: Option<i64>,
    pub config: HashMap<String, String>,
}

/// `retention.bytes`: the most bytes a partition keeps (`-1`: no limit).
pub const RETENTION_BYTES: &str = "retention.bytes";
/// `cleanup.policy`: `delete` (default), `compact`, or `compact,delete`.
pub const CLEANUP_POLICY: &str = "cleanup.policy";
/// `delete.retention.ms`: how long tombstones of compacted topics are kept.
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";

/// Every key `TopicConfig::config` accepts.
pub const TOPIC_CONFIG_KEYS: [&str; 3] = [RETENTION_BYTES, CLEANUP_POLICY, DELETE_RETENTION_MS];

impl TopicConfig {
    /// Checks the name, partition count, retention and every config key.
    pub fn validate(&self) -> Result<()> {
        streamhouse_core::names::validate_topic_name(&self.name)?;
        streamhouse_core::names::validate_partition_count(self.partition_count)?;
        if let Some(ms) = self.retention_ms
            && ms <= 0
        {
            return Err(Error::InvalidArgument {
                field: "retention_ms",
                reason: format!("{ms} is not positive (use None to keep records forever)"),
            });
        }
        for (key, value) in &self.config {
            validate_config_entry(key, value)?;
        }
        Ok(())
    }
}

fn validate_config_entry(key: &str, value: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidConfig {
        key: key.to_string(),
        reason: format!("{value:?} {reason}"),
    };
    match key {
        RETENTION_BYTES => match value.parse::<i64>() {
            Ok(v) if v == -1 || v > 0 => Ok(()),
            _ => Err(invalid("is not a positive byte count or -1")),
        },
        DELETE_RETENTION_MS => match value.parse::<i64>() {
            Ok(v) if v >= 0 => Ok(()),
            _ => Err(invalid("is not a non-negative number of milliseconds")),
        },
        CLEANUP_POLICY => match value {
            "delete" | "compact" | "compact,delete" | "delete,compact" => Ok(()),
            _ => Err(invalid("is not one of delete, compact, compact,delete")),
        },
        _ => Err(Error::InvalidConfig {
            key: key.to_string(),
            reason: format!(
                "unknown key; known keys are {}",
                TOPIC_CONFIG_KEYS.join(", ")
            ),
        }),
    }
}

/// A topic as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub id: TopicId,
    pub name: String,
    pub partition_count: u32,
    pub retention_ms: Option<i64>,
    pub config: HashMap<String, String>,
    pub created_at_ms: i64,
}

impl Topic {
    /// Whether its `cleanup.policy` keeps the latest record per key
    /// (`compact` or `compact,delete`).
    pub fn is_compacted(&self) -> bool {
        self.config
            .get(CLEANUP_POLICY)
            .is_some_and(|p| p.split(',').any(|p| p.trim() == "compact"))
    }
}

/// The offsets of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionState {
    pub topic_id: TopicId,
    pub partition: u32,
    /// First offset still readable.
    pub log_start_offset: i64,
    /// Offset the next committed record gets (the high watermark).
    pub next_offset: i64,
    /// First offset of the oldest open transaction in the partition, or
    /// `next_offset` when none is open: read_committed readers stop here.
    pub last_stable_offset: i64,
}

/// One flushed object and the partition chunks it holds, to be committed in
/// one transaction by [`LogStore::commit_object`](crate::LogStore::commit_object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectCommit {
    pub object_key: String,
    pub size_bytes: u64,
    pub chunks: Vec<ChunkCommit>,
}

/// A run of record batches of one partition inside an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkCommit {
    pub topic_id: TopicId,
    pub partition: u32,
    /// Byte offset of the chunk's first batch in the object.
    pub byte_start: u64,
    /// The chunk's batches, back to back from `byte_start`.
    pub batches: Vec<BatchCommit>,
}

/// What the commit needs to know of one batch (all from its header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchCommit {
    pub byte_length: u64,
    /// Offsets the batch occupies: `last_offset_delta + 1`.
    pub offset_span: i64,
    pub record_count: i64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Set for batches of idempotent producers: checked and recorded in the
    /// commit transaction.
    pub producer: Option<ProducerBatch>,
}

/// Batches of each idempotent producer per partition whose offsets the
/// commit remembers: a retry of one of them is answered with its original
/// offsets; an older retry is still recognised, as
/// [`BatchRejected::AlreadyCommitted`]. Producers send at most this many
/// batches per partition in one request, so a resent request gets every
/// offset back.
pub const PRODUCER_BATCHES_REMEMBERED: usize = 16;

/// The idempotence fields of a batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    /// Records in the batch: its last sequence is `base_sequence + count - 1`
    /// (wrapping past `i32::MAX` to 0, as Kafka does).
    pub record_count: i32,
    /// The batch belongs to the producer's open transaction.
    pub transactional: bool,
}

impl ProducerBatch {
    /// Sequence of the batch's last record.
    pub fn last_sequence(&self) -> i32 {
        add_sequence(self.base_sequence, self.record_count - 1)
    }
}

/// `sequence + n`, wrapping past `i32::MAX` to 0 as Kafka sequences do.
pub fn add_sequence(sequence: i32, n: i32) -> i32 {
    ((i64::from(sequence) + i64::from(n)) % (i64::from(i32::MAX) + 1)) as i32
}

/// Why one chunk of a commit was not applied (the rest of the commit was).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkRejected {
    #[error("topic id {topic_id} has no partition {partition} (the topic was deleted)")]
    PartitionGone { topic_id: TopicId, partition: u32 },
}

/// What the commit did with one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Committed at this base offset.
    Appended { base_offset: i64 },
    /// Already committed earlier (a retry of an idempotent producer); this
    /// is where. Its bytes in this object are referenced by no segment.
    Duplicate { base_offset: i64 },
    /// Not committed.
    Rejected(BatchRejected),
}

/// Why a batch of an idempotent producer was not committed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchRejected {
    #[error("producer {producer_id}: expected sequence {expected}, got {received}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        received: i32,
    },
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current_epoch}")]
    ProducerFenced {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
    },
    #[error("producer id {producer_id} epoch {epoch} was never issued")]
    UnknownProducer { producer_id: i64, epoch: i16 },
    /// A retry of a batch committed earlier, too long ago for its offsets
    /// to be remembered: its sequences lie at or before the last one
    /// committed in its epoch. Nothing was written now; the batch is
    /// delivered, at offsets no longer known.
    #[error(
        "producer {producer_id} epoch {epoch} sequences {first_sequence}..={last_sequence} \
         were committed before (offsets no longer known); nothing was written again"
    )]
    AlreadyCommitted {
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
    },
    /// A transactional batch from a producer without a transactional id.
    #[error(
        "producer {producer_id} has no transactional id: it cannot write transactional batches"
    )]
    NotTransactional { producer_id: i64 },
}

/// Per chunk, in the order of [`ObjectCommit::chunks`]: what happened to
/// every batch, or why the whole chunk was rejected.
pub type CommitOutcome = Vec<Result<Vec<BatchOutcome>, ChunkRejected>>;

/// A producer id with its current epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub epoch: i16,
}

/// A committed range of offsets of one partition, stored in an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub topic_id: TopicId,
    pub partition: u32,
    pub base_offset: i64,
    /// Last offset in the segment (inclusive).
    pub last_offset: i64,
    pub record_count: i64,
    pub object_key: String,
    pub object_size: u64,
    pub byte_start: u64,
    pub byte_length: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

/// A consumer group's committed position in one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will read.
    pub offset: i64,
    pub metadata: Option<String>,
    pub committed_at_ms: i64,
}

/// What an agent registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRegistration {
    pub agent_id: String,
    pub group: String,
    /// Address clients connect to, `host:port`.
    pub address: String,
    pub zone: Option<String>,
    /// Address Kafka clients connect to, `host:port`; `None` when the agent
    /// has no Kafka listener.
    pub kafka_address: Option<String>,
}

/// A registered agent, with its heartbeat age measured by the store's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentInfo {
    pub agent_id: String,
    pub group: String,
    pub address: String,
    pub zone: Option<String>,
    pub started_at_ms: i64,
    pub last_heartbeat_ms: i64,
    /// Time since the last heartbeat, by the metadata store's clock.
    pub heartbeat_age: Duration,
    /// Stable node id of the agent id (its Kafka broker id), assigned on
    /// first registration and kept for later registrations of the same id.
    pub node_id: i32,
    /// Address Kafka clients connect to, if the agent listens for them.
    pub kafka_address: Option<String>,
}

impl AgentInfo {
    /// Whether the agent heartbeated within `ttl`.
    pub fn is_live(&self, ttl: Duration) -> bool {
        self.heartbeat_age <= ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        let mut c = TopicConfig {
            name: "t".into(),
            partition_count: 1,
            ..Default::default()
        };
        c.validate().unwrap();
        c.config.insert(CLEANUP_POLICY.into(), "compact".into());
        c.config.insert(RETENTION_BYTES.into(), "1000".into());
        c.validate().unwrap();
        c.config.insert(RETENTION_BYTES.into(), "0".into());
        assert!(matches!(c.validate(), Err(Error::InvalidConfig { .. })));
        c.config.remove(RETENTION_BYTES);
        c.config.insert("segment.bytes".into(), "1".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("unknown key"), "{err}");
        c.config.clear();
        c.retention_ms = Some(0);
        assert!(c.validate().is_err());
    }
}

/// A partition of a topic, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Member epoch a consumer sends to join a group.
pub const JOIN_GROUP_EPOCH: i32 = 0;
/// Member epoch a consumer sends to leave a group.
pub const LEAVE_GROUP_EPOCH: i32 = -1;

/// A group member's heartbeat: who it is, what it subscribes to and which
/// partitions it owns right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupHeartbeat {
    pub group_id: String,
    /// Empty to join as a new member.
    pub member_id: String,
    /// [`JOIN_GROUP_EPOCH`], [`LEAVE_GROUP_EPOCH`], or the epoch last given.
    pub member_epoch: i32,
    pub client_id: String,
    pub subscription: Vec<String>,
    pub owned: Vec<TopicPartition>,
    /// The member is removed when it misses heartbeats for this long.
    pub session_timeout_ms: i64,
    /// The server-side assignor the member asks for (one of
    /// [`crate::assignment::ASSIGNORS`]); `None` keeps what it asked for
    /// before ([`crate::assignment::UNIFORM`] when it joins).
    pub assignor: Option<String>,
}

/// The coordinator's answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupAssignment {
    pub member_id: String,
    pub member_epoch: i32,
    pub group_epoch: i32,
    /// Partitions the member may own now: its target minus partitions other
    /// members have not released yet. Owned partitions missing here must be
    /// released (revoked).
    pub assigned: Vec<TopicPartition>,
    /// Partitions of its target still held by others (it gets them once
    /// released).
    pub pending: Vec<TopicPartition>,
}

/// A member as the coordinator stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub client_id: String,
    pub member_epoch: i32,
    pub subscription: Vec<String>,
    pub owned: Vec<TopicPartition>,
    pub target: Vec<TopicPartition>,
    pub heartbeat_age: Duration,
    pub session_timeout: Duration,
    /// The server-side assignor it asked for; for a classic group's
    /// member, the group's client-side protocol.
    pub assignor: String,
}

/// A consumer group: its members and committed offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub group_epoch: i32,
    /// Members whose session has not timed out.
    pub members: Vec<GroupMember>,
    pub offsets: Vec<CommittedOffset>,
}

/// One offset to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will read.
    pub offset: i64,
    pub metadata: Option<String>,
}

/// A producer's open transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenTransaction {
    pub producer_id: i64,
    pub epoch: i16,
    pub started_at_ms: i64,
    pub timeout_ms: i64,
    /// Partitions it wrote to, with the first offset it wrote in each.
    pub partitions: Vec<(TopicId, u32, i64)>,
}

/// Ends a producer's transaction: commit or abort markers for every
/// partition it wrote to (in `markers`, one control batch per partition) and
/// its pending offset commits, applied in one metadata transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndTransaction {
    pub producer_id: i64,
    /// The epoch of the transaction to end; `None` ends whatever transaction
    /// is open (timeouts, and fencing by a new instance).
    pub epoch: Option<i16>,
    pub commit: bool,
    /// The object holding the markers; `None` when the transaction wrote
    /// to no partition.
    pub markers: Option<ObjectCommit>,
    /// What happens to the producer's epoch, and so which transaction the
    /// request names.
    pub kind: EndKind,
}

/// Offsets of an aborted transaction in one partition.
/// How an end request names its transaction and what it does to the
/// producer's epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndKind {
    /// The producer moves to its next epoch (native producers and Kafka
    /// clients of KIP-890): the request's epoch names the transaction, so
    /// a late end can never end a later one.
    BumpEpoch,
    /// The producer keeps its epoch, as Kafka clients before KIP-890 do:
    /// they keep epoch and sequences across transactions. The transaction
    /// is named by its start (ms, database clock) as the request found it
    /// (`None`: none was open): an end whose transaction has ended is
    /// answered as a retry when it repeats the last end, and refused with
    /// [`crate::Error::InvalidTransactionState`] otherwise, never applied
    /// to a later transaction.
    KeepEpoch { started_at_ms: Option<i64> },
}

/// A transactional id's producer and the state of its transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i64,
    pub state: TransactionState,
    /// When the open transaction started (ms, database clock).
    pub started_at_ms: Option<i64>,
    /// The partitions the open transaction wrote to.
    pub partitions: Vec<TopicPartition>,
}

/// The state of a transactional id, in Kafka's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionState {
    /// No transaction ended or open since the producer was initialized.
    Empty,
    Ongoing,
    CompleteCommit,
    CompleteAbort,
}

impl TransactionState {
    /// Kafka's name of the state.
    pub fn kafka_name(self) -> &'static str {
        match self {
            TransactionState::Empty => "Empty",
            TransactionState::Ongoing => "Ongoing",
            TransactionState::CompleteCommit => "CompleteCommit",
            TransactionState::CompleteAbort => "CompleteAbort",
        }
    }
}

/// A producer that wrote to a partition, as Kafka's DescribeProducers
/// reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    /// The first offset of its open transaction in the partition.
    pub transaction_start_offset: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTransaction {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of its abort marker.
    pub last_offset: i64,
}

/// Changes to a topic; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicAlter {
    /// A larger partition count (partitions can only be added).
    pub partition_count: Option<u32>,
    /// `Some(None)` keeps records forever.
    pub retention_ms: Option<Option<i64>>,
    /// Config keys to set.
    pub set_config: HashMap<String, String>,
    /// Config keys to remove.
    pub remove_config: Vec<String>,
}

/// Segment rows and bytes of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionUsage {
    pub partition: u32,
    pub segments: u64,
    pub bytes: u64,
}
