//! The one error type of `streamhouse-metadata`.

use crate::types::TopicId;

/// A metadata operation failed. Backends map their own failures (unique
/// violations, lock timeouts, lost connections) onto these variants and keep
/// the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("topic {0:?} already exists")]
    TopicAlreadyExists(String),
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    #[error("topic id {0} does not exist (the topic was deleted)")]
    TopicIdNotFound(TopicId),
    #[error("topic {topic:?} has no partition {partition} (it has {partition_count})")]
    PartitionNotFound {
        topic: String,
        partition: u32,
        partition_count: u32,
    },
    #[error("topic id {topic_id} has no partition {partition}")]
    PartitionIdNotFound { topic_id: TopicId, partition: u32 },
    #[error(
        "topic id {topic_id} partition {partition}: offset {offset} is past the last stable \
         offset {last_stable_offset} (high watermark {high_watermark})"
    )]
    LogStartOutOfRange {
        topic_id: TopicId,
        partition: u32,
        offset: i64,
        last_stable_offset: i64,
        high_watermark: i64,
    },
    #[error("producer id {0} was never issued")]
    UnknownProducer(i64),
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current_epoch}")]
    ProducerFenced {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
    },
    #[error("group {group:?} has no member {member_id:?} (its session expired or it left); rejoin")]
    UnknownMember { group: String, member_id: String },
    #[error(
        "member {member_id:?} of group {group:?} sent epoch {epoch}, the current epoch is {current}; rejoin"
    )]
    FencedMemberEpoch {
        group: String,
        member_id: String,
        epoch: i32,
        current: i32,
    },
    #[error(
        "member {member_id:?} of group {group:?} does not own {topic}/{partition} \
         (the group's assignment moved on); it can commit only the partitions it owns"
    )]
    NotPartitionOwner {
        group: String,
        member_id: String,
        topic: String,
        partition: u32,
    },
    #[error(
        "member {member_id:?} of group {group:?} sent generation {generation}, the current \
         generation is {current}; rejoin"
    )]
    IllegalGeneration {
        group: String,
        member_id: String,
        generation: i32,
        current: i32,
    },
    #[error("group {0:?} is rebalancing; rejoin")]
    RebalanceInProgress(String),
    #[error("group {group:?}: {reason}")]
    InconsistentGroupProtocol { group: String, reason: String },
    #[error(
        "group {group:?}: instance id {instance_id:?} now belongs to another member than \
         {member_id:?} (a newer instance replaced it)"
    )]
    FencedInstanceId {
        group: String,
        instance_id: String,
        member_id: String,
    },
    #[error(
        "group {group:?} would hold {bytes} bytes of member state, over the {max} bytes a \
         classic group may hold"
    )]
    GroupMaxSizeReached {
        group: String,
        bytes: usize,
        max: usize,
    },
    #[error("group {group:?} has live members subscribed to topic {topic:?}")]
    GroupSubscribedToTopic { group: String, topic: String },
    #[error("group {0:?} has active members")]
    GroupNotEmpty(String),
    #[error("group {0:?} does not exist")]
    GroupNotFound(String),
    #[error("the partitions of producer {0}'s transaction changed while it was ending; retry")]
    TransactionPartitionsChanged(i64),
    #[error("producer {producer_id}: {reason}")]
    InvalidTransactionState { producer_id: i64, reason: String },
    #[error("agent {0:?} is not registered")]
    AgentNotFound(String),
    /// A name or count breaks the rules of `streamhouse-core`.
    #[error(transparent)]
    Invalid(#[from] streamhouse_core::Error),
    #[error("invalid topic config {key:?}: {reason}")]
    InvalidConfig { key: String, reason: String },
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("invalid metadata URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("metadata store failed while {op}")]
    Database {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The connection failed after `COMMIT` was sent: the transaction may
    /// or may not have committed.
    #[error("metadata store failed while {op}; it may or may not have committed")]
    CommitOutcomeUnknown {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying the metadata schema migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl Error {
    /// Whether the same call may succeed if retried: lost connections, pool
    /// timeouts, lock contention, serialization failures and deadlocks.
    pub fn is_retryable(&self) -> bool {
        if let Error::TransactionPartitionsChanged(_) = self {
            return true;
        }
        let Error::Database { source, .. } = self else {
            return false;
        };
        match source {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
            sqlx::Error::Database(db) => matches!(
                db.code().as_deref(),
                // PostgreSQL: serialization failure, deadlock, admin shutdown,
                // cannot connect now. SQLite: BUSY, LOCKED (and extended codes).
                Some("40001" | "40P01" | "57P01" | "57P03" | "5" | "6" | "261" | "517" | "262")
            ),
            _ => false,
        }
    }

    pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
        move |source| Error::Database { op, source }
    }
}

/// Result with the metadata [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
