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
    /// A Kafka request or response that does not code.
    #[error("Kafka protocol: {what}")]
    KafkaProtocol {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Kafka client broke the framing rules; its connection is closed.
    #[error("Kafka connection: {0}")]
    KafkaConnection(String),
    #[error("Kafka connection I/O failed")]
    KafkaIo(#[source] std::io::Error),
}

/// Result with the agent [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest piece of client input (a name, an id) quoted back to a client
/// or into a log line, in characters.
pub(crate) const MAX_QUOTED_CHARS: usize = 256;
/// Longest message sent to a client, in bytes: common gRPC clients drop
/// trailers over 8 KiB and report RESOURCE_EXHAUSTED instead of the error.
pub(crate) const MAX_MESSAGE_BYTES: usize = 2048;

/// Client input shortened to [`MAX_QUOTED_CHARS`] for a message or a log.
pub(crate) fn bounded(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(MAX_QUOTED_CHARS) {
        None => s.into(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &s[..cut], s.len()).into(),
    }
}

/// `msg` with every quoted string (as `{:?}` prints client input) cut to
/// [`MAX_QUOTED_CHARS`], and the whole cut to [`MAX_MESSAGE_BYTES`].
pub(crate) fn bound_message(msg: String) -> String {
    let mut out = String::with_capacity(msg.len().min(MAX_MESSAGE_BYTES));
    let mut rest = msg.as_str();
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        // The closing quote: the first one not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.unwrap_or(rest.len());
        let quoted = &rest[..end];
        match quoted.char_indices().nth(MAX_QUOTED_CHARS) {
            None => out.push_str(quoted),
            Some((cut, _)) => {
                out.push_str(&quoted[..cut]);
                out.push('…');
            }
        }
        if end < rest.len() {
            out.push('"');
            if quoted.len() > MAX_QUOTED_CHARS {
                out.push_str(&format!(" ({} bytes)", quoted.len()));
            }
            rest = &rest[end + 1..];
        } else {
            rest = "";
        }
    }
    out.push_str(rest);
    if out.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES - '…'.len_utf8();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The error message with its causes, for clients, bounded by
/// [`bound_message`].
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
    bound_message(out)
}

/// The per-partition code of a storage error. `STORAGE_UNAVAILABLE` only
/// for failures that wrote nothing; a commit that may have applied is
/// `OUTCOME_UNKNOWN`.
pub(crate) fn error_code(e: &streamhouse_storage::Error) -> ErrorCode {
    use streamhouse_core::Error as Core;
    use streamhouse_metadata::BatchRejected;
    use streamhouse_storage::Error as S;
    match e {
        S::TopicNotFound(_) => ErrorCode::UnknownTopic,
        S::PartitionNotFound { .. } => ErrorCode::UnknownPartition,
        S::TopicDeleted { .. } => ErrorCode::TopicDeleted,
        S::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        S::CorruptBatch { .. } => ErrorCode::CorruptBatch,
        S::InvalidBatch {
            source: Core::TooLarge { .. },
            ..
        } => ErrorCode::RecordTooLarge,
        S::InvalidBatch { .. } => ErrorCode::InvalidRecord,
        S::Rejected { reason, .. } => match reason {
            BatchRejected::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            BatchRejected::ProducerFenced { .. } => ErrorCode::ProducerFenced,
            BatchRejected::UnknownProducer { .. } => ErrorCode::UnknownProducer,
            BatchRejected::NotTransactional { .. } => ErrorCode::InvalidTxnState,
            BatchRejected::AlreadyCommitted { .. } => ErrorCode::DuplicateSequence,
        },
        // Written or not, nobody knows: a plain retry may duplicate.
        S::OutcomeUnknown(_) => ErrorCode::OutcomeUnknown,
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
    let status = match e {
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
        M::LogStartOutOfRange { .. } => Status::out_of_range(msg),
        M::ProducerFenced { .. }
        | M::InvalidTransactionState { .. }
        | M::UnknownProducer(_)
        | M::FencedMemberEpoch { .. }
        | M::NotPartitionOwner { .. }
        | M::GroupNotEmpty(_) => Status::failed_precondition(msg),
        e if e.is_retryable() => Status::unavailable(msg),
        _ => Status::internal(msg),
    };
    match metadata_error_code(e) {
        Some(code) => streamhouse_proto::with_error_code(status, code),
        None => status,
    }
}

/// The [`ErrorCode`] a metadata error stands for, carried in its status.
fn metadata_error_code(e: &streamhouse_metadata::Error) -> Option<ErrorCode> {
    use streamhouse_metadata::Error as M;
    Some(match e {
        M::TopicNotFound(_) | M::TopicIdNotFound(_) => ErrorCode::UnknownTopic,
        M::PartitionNotFound { .. } | M::PartitionIdNotFound { .. } => ErrorCode::UnknownPartition,
        M::ProducerFenced { .. } => ErrorCode::ProducerFenced,
        M::UnknownProducer(_) => ErrorCode::UnknownProducer,
        M::InvalidTransactionState { .. } => ErrorCode::InvalidTxnState,
        M::UnknownMember { .. } => ErrorCode::UnknownMember,
        // The member's view of its partitions is stale, as with a fenced
        // epoch: a rebalance moved the partition on.
        M::FencedMemberEpoch { .. } | M::NotPartitionOwner { .. } => ErrorCode::FencedMemberEpoch,
        M::GroupNotEmpty(_) => ErrorCode::GroupNotEmpty,
        M::LogStartOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        e if e.is_retryable() => ErrorCode::StorageUnavailable,
        M::TopicAlreadyExists(_)
        | M::GroupNotFound(_)
        | M::AgentNotFound(_)
        | M::Invalid(_)
        | M::InvalidConfig { .. }
        | M::InvalidArgument { .. } => return None,
        _ => ErrorCode::Internal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quoted_input_is_cut() {
        let name = "t".repeat(10_000);
        let msg = bound_message(format!("topic {name:?} does not exist"));
        assert!(msg.len() < 400, "{}", msg.len());
        assert!(msg.starts_with("topic \"ttt"));
        assert!(msg.ends_with("\" (10000 bytes) does not exist"), "{msg}");
        let short = "topic \"orders\" partition 3: bad \\\"quote\\\"";
        assert_eq!(bound_message(short.to_string()), short);
    }

    #[test]
    fn messages_are_capped() {
        let msg = bound_message("é".repeat(5_000));
        assert!(msg.len() <= MAX_MESSAGE_BYTES);
        assert!(msg.ends_with('…'));
        let unclosed = bound_message(format!("name \"{}", "x".repeat(1_000)));
        assert!(unclosed.len() < 300, "{unclosed}");
        assert_eq!(bounded("abc"), "abc");
        assert!(bounded(&"a".repeat(300)).ends_with("(300 bytes in all)"));
    }

    #[test]
    fn produce_outcomes_say_whether_anything_was_written() {
        use std::sync::Arc;
        use streamhouse_storage::Error as S;
        let not_written = S::FlushFailed(Arc::new(S::TopicNotFound("t".into())));
        assert_eq!(error_code(&not_written), ErrorCode::StorageUnavailable);
        let unknown = S::OutcomeUnknown(Arc::new(S::TopicNotFound("t".into())));
        assert_eq!(error_code(&unknown), ErrorCode::OutcomeUnknown);
        let already = S::Rejected {
            topic: "t".into(),
            partition: 0,
            reason: streamhouse_metadata::BatchRejected::AlreadyCommitted {
                producer_id: 1,
                epoch: 0,
                first_sequence: 0,
                last_sequence: 4,
            },
        };
        assert_eq!(error_code(&already), ErrorCode::DuplicateSequence);
    }

    #[test]
    fn statuses_carry_the_error_code_they_stand_for() {
        use streamhouse_metadata::Error as M;
        let code = |e: M| streamhouse_proto::status_error_code(&status(&e));
        let fenced_member = M::FencedMemberEpoch {
            group: "g".into(),
            member_id: "m".into(),
            epoch: 1,
            current: 2,
        };
        // Same gRPC class, different meaning: the code tells them apart.
        assert_eq!(
            status(&fenced_member).code(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(code(fenced_member), Some(ErrorCode::FencedMemberEpoch));
        let not_owner = M::NotPartitionOwner {
            group: "g".into(),
            member_id: "m".into(),
            topic: "t".into(),
            partition: 0,
        };
        assert_eq!(status(&not_owner).code(), tonic::Code::FailedPrecondition);
        assert_eq!(code(not_owner), Some(ErrorCode::FencedMemberEpoch));
        let fenced_producer = M::ProducerFenced {
            producer_id: 1,
            epoch: 0,
            current_epoch: 1,
        };
        assert_eq!(code(fenced_producer), Some(ErrorCode::ProducerFenced));
        let state = M::InvalidTransactionState {
            producer_id: 1,
            reason: "r".into(),
        };
        assert_eq!(code(state), Some(ErrorCode::InvalidTxnState));
        assert_eq!(
            code(M::GroupNotEmpty("g".into())),
            Some(ErrorCode::GroupNotEmpty)
        );
        assert_eq!(
            code(M::TopicNotFound("t".into())),
            Some(ErrorCode::UnknownTopic)
        );
        assert_eq!(code(M::TopicAlreadyExists("t".into())), None);
        assert_eq!(
            code(M::TransactionPartitionsChanged(1)),
            Some(ErrorCode::StorageUnavailable)
        );
    }
}
