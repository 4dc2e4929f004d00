//! The one error type of `streamhouse-client`.

use std::sync::Arc;
use std::time::Duration;

use streamhouse_proto::ErrorCode;

/// A client operation failed. [`Error::is_retryable`] tells whether trying
/// again may help; [`Error::code`] is the agent's [`ErrorCode`] behind it.
/// Both come from the error code, never from the gRPC status class.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition} (it has {partition_count})")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partition_count: u32,
    },
    #[error("record of {size} bytes is over the maximum batch size of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    #[error("no live agent in group {group:?}: {reason}")]
    NoAgents { group: String, reason: String },
    #[error("request to agent {address} failed: {status}")]
    Rpc {
        address: String,
        #[source]
        status: Arc<tonic::Status>,
    },
    #[error("agent {address} did not answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    /// The agent refused a batch.
    #[error(
        "agent refused records for topic {topic:?} partition {partition} ({code:?}): {message}"
    )]
    Rejected {
        topic: String,
        partition: u32,
        code: ErrorCode,
        message: String,
    },
    /// The agent could not tell whether the records were written (its
    /// metadata store failed while committing them). A producer without
    /// idempotence does not resend them, as that could write them twice;
    /// resending them is the application's choice.
    #[error(
        "records for topic {topic:?} partition {partition} may or may not have been written \
         (resending them may write them twice): {message}"
    )]
    OutcomeUnknown {
        topic: String,
        partition: u32,
        message: String,
    },
    /// Every attempt failed; the last error is the source. The records may
    /// or may not have been written.
    #[error(
        "gave up on topic {topic:?} partition {partition} after {attempts} attempts; the records may or may not have been written"
    )]
    RetriesExhausted {
        topic: String,
        partition: u32,
        attempts: u32,
        #[source]
        last: Arc<Error>,
    },
    #[error(transparent)]
    Metadata(Arc<streamhouse_metadata::Error>),
    #[error(transparent)]
    Batch(Arc<streamhouse_core::Error>),
    #[error("the producer is closed")]
    Closed,
    /// A transaction call came at the wrong time.
    #[error("transaction: {0}")]
    Transaction(String),
    /// A newer instance of this transactional producer fenced it: it can
    /// do nothing more (close it; the newer instance carries on).
    #[error("the transactional producer was fenced by a newer instance")]
    ProducerFenced {
        #[source]
        source: Arc<Error>,
    },
    /// The open transaction cannot commit (e.g. the consumer group moved
    /// on, or a batch failed); abort it, the producer stays usable.
    #[error("the transaction cannot commit; abort it")]
    TransactionAbortable {
        #[source]
        source: Arc<Error>,
    },
    /// The group coordinator refused a commit or heartbeat.
    #[error("consumer group error ({code:?}): {message}")]
    Group { code: ErrorCode, message: String },
    #[error("no committed offset for {0} and auto_offset_reset is None")]
    NoOffset(streamhouse_metadata::TopicPartition),
    #[error("the position in {0} is out of range and auto_offset_reset is None")]
    OffsetOutOfRange(streamhouse_metadata::TopicPartition),
    #[error("{0} is not assigned to this consumer")]
    NotAssigned(streamhouse_metadata::TopicPartition),
    /// A stored batch is damaged (fails its CRC, or cannot be parsed) and
    /// was not served. The partition stops here until the application
    /// seeks; `seek(partition, last_offset + 1)` skips the damaged range,
    /// losing its records (or build the consumer with
    /// `skip_corrupt_batches(true)` to do that automatically).
    #[error(
        "corrupt record batch in {partition} at offsets {first_offset}..={last_offset}: \
         {message}; seek to {} to skip it", last_offset + 1
    )]
    CorruptBatch {
        partition: streamhouse_metadata::TopicPartition,
        first_offset: i64,
        last_offset: i64,
        message: String,
    },
}

impl Error {
    /// The agent's error code behind this error: a refused batch's, a group
    /// answer's, or the one an agent's error status carries.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Rejected { code, .. } | Error::Group { code, .. } => Some(*code),
            Error::OutcomeUnknown { .. } => Some(ErrorCode::OutcomeUnknown),
            Error::Rpc { status, .. } => streamhouse_proto::status_error_code(status),
            Error::RetriesExhausted { last, .. } => last.code(),
            Error::ProducerFenced { source } | Error::TransactionAbortable { source } => {
                source.code()
            }
            _ => None,
        }
    }

    /// Whether the same operation may succeed if tried again (later, or on
    /// another agent). An agent's answer is judged by its error code; a
    /// status without one did not come from the agent's handling of the
    /// request (connection lost, timeout, transport limits), and is judged
    /// as the transport failure it is.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NoAgents { .. } | Error::Timeout { .. } => true,
            Error::Rpc { status, .. } => match streamhouse_proto::status_error_code(status) {
                Some(code) => code_is_retryable(code),
                None => {
                    matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Aborted
                            | tonic::Code::Unknown
                            | tonic::Code::Cancelled
                            | tonic::Code::ResourceExhausted
                            | tonic::Code::Internal
                    ) && !status.message().contains("message length too large")
                }
            },
            Error::Rejected { code, .. } => code_is_retryable(*code),
            Error::Metadata(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl Error {
    /// The gRPC status code behind an error from an agent, if any
    /// (admin calls keep the agent's NOT_FOUND, ALREADY_EXISTS, ...).
    pub fn status_code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// Whether an agent's per-partition error code is worth a retry.
pub(crate) fn code_is_retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::StorageUnavailable
            | ErrorCode::TopicDeleted
            | ErrorCode::AgentShuttingDown
            | ErrorCode::Internal
    )
}

impl From<streamhouse_metadata::Error> for Error {
    fn from(e: streamhouse_metadata::Error) -> Self {
        Error::Metadata(Arc::new(e))
    }
}

impl From<streamhouse_core::Error> for Error {
    fn from(e: streamhouse_core::Error) -> Self {
        Error::Batch(Arc::new(e))
    }
}

/// Result with the client [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
