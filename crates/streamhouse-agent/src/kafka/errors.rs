//! Our error codes as Kafka error codes, in one place.

use kafka_protocol::ResponseError;
use streamhouse_proto::ErrorCode;

/// The Kafka error code a client gets for `code`.
pub(super) fn kafka_code(code: ErrorCode) -> i16 {
    use ResponseError as K;
    let k = match code {
        ErrorCode::None => return 0,
        ErrorCode::UnknownTopic | ErrorCode::UnknownPartition | ErrorCode::TopicDeleted => {
            K::UnknownTopicOrPartition
        }
        ErrorCode::InvalidRecord => K::InvalidRecord,
        ErrorCode::RecordTooLarge => K::MessageTooLarge,
        ErrorCode::OutOfOrderSequence => K::OutOfOrderSequenceNumber,
        // An idempotent producer whose epoch was bumped: Kafka answers
        // produce requests of a stale epoch with INVALID_PRODUCER_EPOCH.
        ErrorCode::ProducerFenced => K::InvalidProducerEpoch,
        ErrorCode::UnknownProducer => K::UnknownProducerId,
        ErrorCode::StorageUnavailable => K::KafkaStorageError,
        ErrorCode::OffsetOutOfRange => K::OffsetOutOfRange,
        // Retriable, and makes the client refresh its metadata and move on
        // to another agent.
        ErrorCode::AgentShuttingDown => K::NotLeaderOrFollower,
        ErrorCode::Internal => K::UnknownServerError,
        ErrorCode::UnknownMember => K::UnknownMemberId,
        ErrorCode::FencedMemberEpoch => K::FencedMemberEpoch,
        ErrorCode::GroupNotEmpty => K::NonEmptyGroup,
        ErrorCode::InvalidTxnState => K::InvalidTxnState,
        ErrorCode::CorruptBatch => K::CorruptMessage,
        // Delivered before: idempotent Kafka producers take it as success.
        ErrorCode::DuplicateSequence => K::DuplicateSequenceNumber,
        // Retriable: an idempotent producer's retry is answered as a
        // duplicate if the batch was written; as with a Kafka timeout, a
        // retry of another producer may duplicate.
        ErrorCode::OutcomeUnknown => K::RequestTimedOut,
        ErrorCode::AuthenticationFailed => K::SaslAuthenticationFailed,
        // Only produce answers carry it per partition, and only for topics.
        ErrorCode::AuthorizationFailed => K::TopicAuthorizationFailed,
    };
    k.code()
}

/// The Kafka error code of a storage error.
pub(super) fn storage_code(e: &streamhouse_storage::Error) -> i16 {
    kafka_code(crate::error::error_code(e))
}

/// The Kafka error code of a metadata error on a topic request.
pub(super) fn metadata_code(e: &streamhouse_metadata::Error) -> i16 {
    use streamhouse_metadata::Error as M;
    match e {
        M::TopicNotFound(_)
        | M::TopicIdNotFound(_)
        | M::PartitionNotFound { .. }
        | M::PartitionIdNotFound { .. } => ResponseError::UnknownTopicOrPartition.code(),
        M::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists.code(),
        M::Invalid(_) => ResponseError::InvalidTopicException.code(),
        M::InvalidConfig { .. } => ResponseError::InvalidConfig.code(),
        M::InvalidArgument { .. } => ResponseError::InvalidRequest.code(),
        M::UnknownProducer(_) => ResponseError::UnknownProducerId.code(),
        M::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch.code(),
        _ => ResponseError::UnknownServerError.code(),
    }
}

/// The Kafka error code of a metadata error on a group request (JoinGroup,
/// SyncGroup, Heartbeat, LeaveGroup, the group admin APIs, OffsetCommit).
pub(super) fn group_code(e: &streamhouse_metadata::Error) -> i16 {
    use ResponseError as K;
    use streamhouse_metadata::Error as M;
    let k = match e {
        M::UnknownMember { .. } => K::UnknownMemberId,
        M::IllegalGeneration { .. } => K::IllegalGeneration,
        M::RebalanceInProgress(_) => K::RebalanceInProgress,
        M::InconsistentGroupProtocol { .. } => K::InconsistentGroupProtocol,
        M::FencedInstanceId { .. } => K::FencedInstanceId,
        M::FencedMemberEpoch { .. } | M::NotPartitionOwner { .. } => K::FencedMemberEpoch,
        M::GroupNotEmpty(_) => K::NonEmptyGroup,
        M::GroupNotFound(_) => K::GroupIdNotFound,
        M::GroupSubscribedToTopic { .. } => K::GroupSubscribedToTopic,
        M::GroupMaxSizeReached { .. } => K::GroupMaxSizeReached,
        M::TopicNotFound(_) | M::PartitionNotFound { .. } => K::UnknownTopicOrPartition,
        M::InvalidArgument {
            field: "group id", ..
        } => K::InvalidGroupId,
        M::InvalidArgument { .. } | M::Invalid(_) => K::InvalidRequest,
        // Retriable for clients: they look the coordinator up again.
        e if e.is_retryable() => K::CoordinatorNotAvailable,
        _ => K::UnknownServerError,
    };
    k.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_kafka() {
        assert_eq!(kafka_code(ErrorCode::None), 0);
        assert_eq!(kafka_code(ErrorCode::UnknownTopic), 3);
        assert_eq!(kafka_code(ErrorCode::OffsetOutOfRange), 1);
        assert_eq!(kafka_code(ErrorCode::OutOfOrderSequence), 45);
        assert_eq!(kafka_code(ErrorCode::DuplicateSequence), 46);
        assert_eq!(kafka_code(ErrorCode::ProducerFenced), 47);
        assert_eq!(kafka_code(ErrorCode::AgentShuttingDown), 6);
        assert_eq!(kafka_code(ErrorCode::RecordTooLarge), 10);
        assert_eq!(kafka_code(ErrorCode::Internal), -1);
    }

    #[test]
    fn group_codes_match_kafka() {
        use streamhouse_metadata::Error as M;
        let g = || "g".to_string();
        let cases = [
            (
                M::IllegalGeneration {
                    group: g(),
                    member_id: g(),
                    generation: 1,
                    current: 2,
                },
                22,
            ),
            (M::RebalanceInProgress(g()), 27),
            (
                M::UnknownMember {
                    group: g(),
                    member_id: g(),
                },
                25,
            ),
            (
                M::FencedInstanceId {
                    group: g(),
                    instance_id: g(),
                    member_id: g(),
                },
                82,
            ),
            (
                M::InconsistentGroupProtocol {
                    group: g(),
                    reason: g(),
                },
                23,
            ),
            (M::GroupNotEmpty(g()), 68),
            (M::GroupNotFound(g()), 69),
            (
                M::GroupSubscribedToTopic {
                    group: g(),
                    topic: g(),
                },
                86,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(group_code(&e), code, "{e}");
        }
    }
}
