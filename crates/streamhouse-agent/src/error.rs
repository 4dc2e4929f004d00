//! The one error type of `streamhouse-agent`, and how errors reach clients.

use streamhouse_proto::ErrorCode;
use tonic::Status;

/// Starting or running an agent failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error("cannot listen on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] streamhouse_metadata::Error),
    #[error(transparent)]
    Storage(#[from] streamhouse_storage::Error),
    #[error("gRPC server failed")]
    Server(#[source] tonic::transport::Error),
}

/// Result with the agent [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error message with its causes, for clients.
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// The per-partition code of a storage error.
pub(crate) fn error_code(e: &streamhouse_storage::Error) -> ErrorCode {
    use streamhouse_core::Error as Core;
    use streamhouse_metadata::BatchRejected;
    use streamhouse_storage::Error as S;
    match e {
        S::TopicNotFound(_) => ErrorCode::UnknownTopic,
        S::PartitionNotFound { .. } => ErrorCode::UnknownPartition,
        S::TopicDeleted { .. } => ErrorCode::TopicDeleted,
        S::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        S::InvalidBatch {
            source: Core::TooLarge { .. },
            ..
        } => ErrorCode::RecordTooLarge,
        S::InvalidBatch { .. } => ErrorCode::InvalidRecord,
        S::Rejected { reason, .. } => match reason {
            BatchRejected::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            BatchRejected::ProducerFenced { .. } => ErrorCode::ProducerFenced,
            BatchRejected::UnknownProducer { .. } => ErrorCode::UnknownProducer,
        },
        S::Closed => ErrorCode::AgentShuttingDown,
        e if e.is_retryable() => ErrorCode::StorageUnavailable,
        _ => ErrorCode::Internal,
    }
}

/// The gRPC status of a metadata error from an admin call.
pub(crate) fn status(e: &streamhouse_metadata::Error) -> Status {
    use streamhouse_metadata::Error as M;
    let msg = describe(e);
    if e.is_retryable() {
        tracing::warn!(error = %msg, "request failed");
    } else {
        tracing::info!(error = %msg, "request refused");
    }
    match e {
        M::TopicAlreadyExists(_) => Status::already_exists(msg),
        M::TopicNotFound(_)
        | M::GroupNotFound(_)
        | M::UnknownMember { .. }
        | M::TopicIdNotFound(_)
        | M::PartitionNotFound { .. }
        | M::PartitionIdNotFound { .. }
        | M::AgentNotFound(_) => Status::not_found(msg),
        M::Invalid(_) | M::InvalidConfig { .. } | M::InvalidArgument { .. } => {
            Status::invalid_argument(msg)
        }
        M::ProducerFenced { .. }
        | M::InvalidTransactionState { .. }
        | M::UnknownProducer(_)
        | M::FencedMemberEpoch { .. }
        | M::GroupNotEmpty(_) => Status::failed_precondition(msg),
        e if e.is_retryable() => Status::unavailable(msg),
        _ => Status::internal(msg),
    }
}
