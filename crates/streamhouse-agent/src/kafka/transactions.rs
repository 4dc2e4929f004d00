//! The transaction coordinator of the Kafka protocol: AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn (and, in
//! `init_producer_id`, InitProducerId with a transactional id), over the
//! producers, transactions and markers gRPC producers use
//! ([`crate::transactions`]).
//!
//! Kafka clients before KIP-890 keep their producer epoch across
//! transactions, so their EndTxn (v0–v4) keeps it too and names the
//! transaction open when the agent reads it on arrival: an end stalled
//! after that, or retried against another agent meanwhile, never ends the
//! client's next transaction. (A duplicate that reaches an agent only
//! after the next transaction opened is the gap KIP-890 closes; EndTxn v5
//! closes it here too.) EndTxn v5 moves the producer to its next epoch, as
//! native producers do, and answers it.

use std::collections::HashSet;
use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, ProducerId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use streamhouse_metadata::{OffsetCommit, ProducerIdentity};

use super::Broker;
use crate::transactions::{EndError, Ending};

/// AddPartitionsToTxn versions served: the client's form (v4+ is the
/// brokers' batched form).
pub(super) const ADD_PARTITIONS_VERSIONS: RangeInclusive<i16> = 0..=3;
/// AddOffsetsToTxn versions served (v4 lets the answer carry
/// TRANSACTION_ABORTABLE).
pub(super) const ADD_OFFSETS_VERSIONS: RangeInclusive<i16> = 0..=4;
/// TxnOffsetCommit versions served (v3 adds the group member; v5 is the
/// implicit offsets of KIP-890 transactions, not served).
pub(super) const TXN_OFFSET_COMMIT_VERSIONS: RangeInclusive<i16> = 0..=4;
/// EndTxn versions served (v5: the end moves the producer to its next
/// epoch, KIP-890).
pub(super) const END_VERSIONS: RangeInclusive<i16> = 0..=5;

/// The Kafka code of a failed transaction coordinator call.
pub(super) fn coordinator_code(e: &EndError) -> i16 {
    use streamhouse_metadata::Error as M;
    let k = match e {
        EndError::ProducerIdMapping { .. } => ResponseError::InvalidProducerIdMapping,
        EndError::Storage(_) => ResponseError::CoordinatorNotAvailable,
        EndError::Metadata(m) => match m {
            M::ProducerFenced { .. } => ResponseError::ProducerFenced,
            M::UnknownProducer(_) => ResponseError::InvalidProducerIdMapping,
            M::InvalidTransactionState { .. } => ResponseError::InvalidTxnState,
            // The transaction gained partitions while it was being ended,
            // again and again: the client retries.
            M::TransactionPartitionsChanged(_) => ResponseError::ConcurrentTransactions,
            M::TopicNotFound(_)
            | M::TopicIdNotFound(_)
            | M::PartitionNotFound { .. }
            | M::PartitionIdNotFound { .. } => ResponseError::UnknownTopicOrPartition,
            M::InvalidArgument { .. } | M::Invalid(_) => ResponseError::InvalidRequest,
            // The store is unreachable or the outcome is in doubt: ends
            // and additions are safe to retry.
            _ => ResponseError::CoordinatorNotAvailable,
        },
    };
    k.code()
}

/// The producer of `transactional_id`, checked to be `producer_id`.
async fn producer(
    broker: &Broker,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
) -> Result<ProducerIdentity, EndError> {
    match broker
        .metadata
        .transactional_producer_id(transactional_id)
        .await?
    {
        Some(id) if id == producer_id => Ok(ProducerIdentity { producer_id, epoch }),
        _ => Err(EndError::ProducerIdMapping {
            transactional_id: transactional_id.to_string(),
            producer_id,
        }),
    }
}

/// Opens the transaction of the checked producer.
async fn begin(
    broker: &Broker,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
) -> Result<(), EndError> {
    let id = producer(broker, transactional_id, producer_id, epoch).await?;
    Ok(broker.metadata.begin_transaction(id).await?)
}

pub(super) async fn add_partitions(
    broker: &Broker,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    // Partitions that do not exist fail; the others are then not attempted.
    let mut unknown: HashSet<(String, i32)> = HashSet::new();
    for t in &request.v3_and_below_topics {
        let topic = broker.metadata.get_topic(&t.name).await;
        for &p in &t.partitions {
            let exists = matches!(&topic, Ok(Some(topic)) if u32::try_from(p).is_ok_and(|p| p < topic.partition_count));
            if !exists {
                unknown.insert((t.name.to_string(), p));
            }
        }
    }
    let code_of = |name: &str, p: i32, all: i16| {
        if unknown.is_empty() {
            all
        } else if unknown.contains(&(name.to_string(), p)) {
            ResponseError::UnknownTopicOrPartition.code()
        } else {
            ResponseError::OperationNotAttempted.code()
        }
    };
    let all = if unknown.is_empty() {
        match begin(
            broker,
            &request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
        )
        .await
        {
            Ok(()) => 0,
            Err(e) => {
                tracing::info!(error = %e, "Kafka AddPartitionsToTxn failed");
                coordinator_code(&e)
            }
        }
    } else {
        0
    };
    AddPartitionsToTxnResponse::default()
        .with_results_by_topic_v3_and_below(partition_results(&request, |name, p| {
            code_of(name, p, all)
        }))
}

/// Every partition of the request (to v3) with its code.
pub(super) fn partition_results(
    request: &AddPartitionsToTxnRequest,
    code: impl Fn(&str, i32) -> i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    request
        .v3_and_below_topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code(&t.name, p))
                        })
                        .collect(),
                )
        })
        .collect()
}

/// The answer to an AddPartitionsToTxn of a version not served: `code`
/// for the whole request (v4+) and for every partition (to v3).
pub(super) fn refuse_add_partitions(
    request: &AddPartitionsToTxnRequest,
    code: i16,
) -> AddPartitionsToTxnResponse {
    AddPartitionsToTxnResponse::default()
        .with_error_code(code)
        .with_results_by_topic_v3_and_below(partition_results(request, |_, _| code))
}

pub(super) async fn add_offsets(
    broker: &Broker,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    if request.group_id.is_empty() {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ResponseError::InvalidGroupId.code());
    }
    let code = match begin(
        broker,
        &request.transactional_id,
        request.producer_id.0,
        request.producer_epoch,
    )
    .await
    {
        Ok(()) => 0,
        Err(e) => {
            tracing::info!(error = %e, "Kafka AddOffsetsToTxn failed");
            coordinator_code(&e)
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

/// The Kafka code of a failed TxnOffsetCommit (the group coordinator's
/// codes: a stale producer epoch is INVALID_PRODUCER_EPOCH, a stale member
/// ILLEGAL_GENERATION, which abort the transaction).
fn offset_commit_code(e: &EndError) -> i16 {
    use streamhouse_metadata::Error as M;
    match e {
        EndError::Metadata(M::ProducerFenced { .. }) => ResponseError::InvalidProducerEpoch.code(),
        EndError::Metadata(M::UnknownMember { .. }) => ResponseError::UnknownMemberId.code(),
        EndError::Metadata(M::FencedMemberEpoch { .. } | M::NotPartitionOwner { .. }) => {
            ResponseError::IllegalGeneration.code()
        }
        EndError::Metadata(M::InvalidArgument { .. }) => {
            ResponseError::InvalidCommitOffsetSize.code()
        }
        // A classic group's generation, rebalance or instance checks.
        EndError::Metadata(
            m @ (M::IllegalGeneration { .. }
            | M::RebalanceInProgress(_)
            | M::FencedInstanceId { .. }
            | M::GroupNotEmpty(_)
            | M::InconsistentGroupProtocol { .. }),
        ) => super::errors::group_code(m),
        other => coordinator_code(other),
    }
}

pub(super) async fn commit_offsets(
    broker: &Broker,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let mut offsets = Vec::new();
    let mut bad_partition = false;
    for t in &request.topics {
        for p in &t.partitions {
            match u32::try_from(p.partition_index) {
                Ok(partition) => offsets.push(OffsetCommit {
                    topic: t.name.to_string(),
                    partition,
                    offset: p.committed_offset,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                }),
                Err(_) => bad_partition = true,
            }
        }
    }
    let member = (!request.member_id.is_empty() && request.generation_id >= 0)
        .then(|| (request.member_id.as_str(), request.generation_id));
    let code = if request.group_id.is_empty() {
        ResponseError::InvalidGroupId.code()
    } else if bad_partition {
        ResponseError::UnknownTopicOrPartition.code()
    } else {
        let added = async {
            let id = producer(
                broker,
                &request.transactional_id,
                request.producer_id.0,
                request.producer_epoch,
            )
            .await?;
            broker
                .metadata
                .add_transaction_offsets(id, &request.group_id, member, &offsets)
                .await
                .map_err(EndError::from)
        };
        match added.await {
            Ok(()) => 0,
            Err(e) => {
                tracing::info!(error = %e, "Kafka TxnOffsetCommit failed");
                offset_commit_code(&e)
            }
        }
    };
    refuse_commit_offsets(&request, code)
}

/// The answer to a TxnOffsetCommit: `code` for every partition.
pub(super) fn refuse_commit_offsets(
    request: &TxnOffsetCommitRequest,
    code: i16,
) -> TxnOffsetCommitResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

pub(super) async fn end(broker: &Broker, request: EndTxnRequest, version: i16) -> EndTxnResponse {
    let ending = if version >= 5 {
        Ending::BumpEpoch
    } else {
        Ending::KeepEpoch
    };
    let ended = async {
        let id = producer(
            broker,
            &request.transactional_id,
            request.producer_id.0,
            request.producer_epoch,
        )
        .await?;
        crate::transactions::end_transaction(
            &broker.metadata,
            &broker.store,
            id.producer_id,
            Some(id.epoch),
            request.committed,
            ending,
        )
        .await
    };
    match ended.await {
        Ok(next) if version >= 5 => EndTxnResponse::default()
            .with_producer_id(ProducerId(next.producer_id))
            .with_producer_epoch(next.epoch),
        Ok(_) => EndTxnResponse::default(),
        Err(e) => {
            tracing::info!(error = %e, "Kafka EndTxn failed");
            EndTxnResponse::default()
                .with_error_code(coordinator_code(&e))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_errors_map_to_what_kafka_clients_retry_abort_or_fence_on() {
        use streamhouse_metadata::Error as M;
        let fenced = EndError::Metadata(M::ProducerFenced {
            producer_id: 1,
            epoch: 1,
            current_epoch: 2,
        });
        assert_eq!(coordinator_code(&fenced), 90);
        assert_eq!(offset_commit_code(&fenced), 47);
        let state = EndError::Metadata(M::InvalidTransactionState {
            producer_id: 1,
            reason: String::new(),
        });
        assert_eq!(coordinator_code(&state), 48);
        let mapping = EndError::ProducerIdMapping {
            transactional_id: "t".into(),
            producer_id: 1,
        };
        assert_eq!(coordinator_code(&mapping), 49);
        assert_eq!(
            coordinator_code(&EndError::Metadata(M::TransactionPartitionsChanged(1))),
            51
        );
        let stale = EndError::Metadata(M::FencedMemberEpoch {
            group: "g".into(),
            member_id: "m".into(),
            epoch: 1,
            current: 2,
        });
        assert_eq!(offset_commit_code(&stale), 22);
        let generation = EndError::Metadata(M::IllegalGeneration {
            group: "g".into(),
            member_id: "m".into(),
            generation: 1,
            current: 2,
        });
        assert_eq!(offset_commit_code(&generation), 22);
        let rebalancing = EndError::Metadata(M::RebalanceInProgress("g".into()));
        assert_eq!(offset_commit_code(&rebalancing), 27);
    }
}
