//! The one error type of `streamhouse-storage`.

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid storage URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    #[error("topic {topic:?} has no partition {partition} (it has {partition_count})")]
    PartitionNotFound {
        topic: String,
        partition: u32,
        partition_count: u32,
    },
    /// The topic was deleted (and possibly re-created) while the batch was
    /// buffered; a retry resolves the name again.
    #[error("topic {topic:?} was deleted before partition {partition} could be committed")]
    TopicDeleted { topic: String, partition: u32 },
    /// The commit refused a batch of an idempotent producer.
    #[error("batch for topic {topic:?} partition {partition} rejected: {reason}")]
    Rejected {
        topic: String,
        partition: u32,
        reason: streamhouse_metadata::BatchRejected,
    },
    #[error(
        "offset {offset} is out of range for topic {topic:?} partition {partition} \
         (log start {log_start_offset}, next offset {next_offset})"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: i64,
        log_start_offset: i64,
        next_offset: i64,
    },
    /// The record batch was malformed or over a limit.
    #[error("invalid record batch for topic {topic:?} partition {partition}")]
    InvalidBatch {
        topic: String,
        partition: u32,
        #[source]
        source: streamhouse_core::Error,
    },
    #[error("object store {op} of {key:?} failed")]
    ObjectStore {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    /// A stored batch fails its CRC or cannot be parsed: it is never served.
    /// A consumer may skip `first_offset..=last_offset` (seek to
    /// `last_offset + 1`) to read on.
    #[error(
        "corrupt record batch in topic {topic:?} partition {partition} at offsets \
         {first_offset}..={last_offset} (object {key:?}): {reason}"
    )]
    CorruptBatch {
        topic: String,
        partition: u32,
        first_offset: i64,
        last_offset: i64,
        key: String,
        reason: String,
    },
    /// A stored object does not match its own index: bad footer, CRC or range.
    #[error("object {key:?} is corrupt: {reason}")]
    CorruptObject { key: String, reason: String },
    #[error(transparent)]
    Metadata(#[from] streamhouse_metadata::Error),
    /// The upload or commit of a flush failed; no record of it is visible
    /// and the append may be retried.
    #[error("flush failed, nothing of it was committed: {0}")]
    FlushFailed(std::sync::Arc<Error>),
    /// The metadata store's connection failed while the flush's commit was
    /// being sent, and whether it applied could not be settled: the
    /// records may or may not have been written. Only a retry that is
    /// deduplicated (an idempotent producer's, with its original sequence
    /// numbers) is safe; any other may write them twice.
    #[error("the commit's outcome is unknown: the records may or may not have been written: {0}")]
    OutcomeUnknown(std::sync::Arc<Error>),
    #[error("the write pipeline is shut down")]
    Closed,
}

impl Error {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::ObjectStore { source, .. } => !matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ),
            Error::Metadata(e) => e.is_retryable(),
            Error::FlushFailed(_) | Error::TopicDeleted { .. } => true,
            _ => false,
        }
    }
}

/// Result with the storage [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
