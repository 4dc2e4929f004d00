//! ListTransactions, DescribeTransactions and DescribeProducers: the
//! transactional ids, their producers and transactions, and the producers
//! that wrote to a partition, as the metadata store has them.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{self, TopicData};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{TransactionListing, TransactionState};

use super::Broker;

/// ListTransactions versions served (v1 adds the duration filter; v2's
/// pattern filter is not served).
pub(super) const LIST_VERSIONS: RangeInclusive<i16> = 0..=1;
pub(super) const DESCRIBE_VERSIONS: RangeInclusive<i16> = 0..=0;
pub(super) const DESCRIBE_PRODUCERS_VERSIONS: RangeInclusive<i16> = 0..=0;

const STATES: [TransactionState; 4] = [
    TransactionState::Empty,
    TransactionState::Ongoing,
    TransactionState::CompleteCommit,
    TransactionState::CompleteAbort,
];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Whether `t` passes ListTransactions' filters (all of them; an empty
/// filter passes everything).
fn listed(t: &TransactionListing, request: &ListTransactionsRequest, now_ms: i64) -> bool {
    let state = request.state_filters.is_empty()
        || request
            .state_filters
            .iter()
            .any(|s| s.as_str() == t.state.kafka_name());
    let producer = request.producer_id_filters.is_empty()
        || request
            .producer_id_filters
            .iter()
            .any(|p| p.0 == t.producer_id);
    let duration = request.duration_filter < 0
        || t.started_at_ms
            .is_some_and(|s| now_ms - s > request.duration_filter);
    state && producer && duration
}

pub(super) async fn list(
    broker: &Broker,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let unknown: Vec<StrBytes> = request
        .state_filters
        .iter()
        .filter(|s| !STATES.iter().any(|k| k.kafka_name() == s.as_str()))
        .cloned()
        .collect();
    let all = match broker.metadata.transactions(None).await {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "listing transactions failed");
            return ListTransactionsResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code());
        }
    };
    let now = now_ms();
    let states = all
        .iter()
        .filter(|t| listed(t, &request, now))
        .map(|t| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    t.transactional_id.clone(),
                )))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(StrBytes::from_static_str(t.state.kafka_name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}

fn described(t: &TransactionListing) -> describe_transactions_response::TransactionState {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for p in &t.partitions {
        topics
            .entry(p.topic.as_str())
            .or_default()
            .push(p.partition as i32);
    }
    describe_transactions_response::TransactionState::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(
            t.transactional_id.clone(),
        )))
        .with_transaction_state(StrBytes::from_static_str(t.state.kafka_name()))
        .with_transaction_timeout_ms(i32::try_from(t.timeout_ms).unwrap_or(i32::MAX))
        .with_transaction_start_time_ms(t.started_at_ms.unwrap_or(-1))
        .with_producer_id(ProducerId(t.producer_id))
        .with_producer_epoch(t.epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicData::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

pub(super) async fn describe(
    broker: &Broker,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let ids: Vec<String> = request
        .transactional_ids
        .iter()
        .map(|t| t.to_string())
        .collect();
    let found = broker.metadata.transactions(Some(&ids)).await;
    let states = request
        .transactional_ids
        .iter()
        .map(|id| {
            let failed = |code: i16| {
                describe_transactions_response::TransactionState::default()
                    .with_error_code(code)
                    .with_transactional_id(id.clone())
                    .with_transaction_state(StrBytes::from_static_str(""))
                    .with_transaction_start_time_ms(-1)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            };
            match &found {
                Ok(found) => match found.iter().find(|t| t.transactional_id == id.as_str()) {
                    Some(t) => described(t),
                    None => failed(ResponseError::TransactionalIdNotFound.code()),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "describing transactions failed");
                    failed(ResponseError::CoordinatorNotAvailable.code())
                }
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub(super) async fn describe_producers(
    broker: &Broker,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let topic = broker.metadata.get_topic(&t.name).await;
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for &index in &t.partition_indexes {
            let answer = PartitionResponse::default().with_partition_index(index);
            let partition = match &topic {
                Ok(Some(topic)) => u32::try_from(index)
                    .ok()
                    .filter(|&p| p < topic.partition_count)
                    .map(|p| (topic.id, p)),
                Ok(None) => None,
                Err(e) => {
                    partitions.push(
                        answer
                            .with_error_code(ResponseError::UnknownServerError.code())
                            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                    );
                    continue;
                }
            };
            let Some((topic_id, p)) = partition else {
                partitions
                    .push(answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            match broker.metadata.partition_producers(topic_id, p).await {
                Ok(producers) => partitions.push(
                    answer.with_active_producers(
                        producers
                            .iter()
                            .map(|p| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(p.producer_id))
                                    .with_producer_epoch(i32::from(p.epoch))
                                    .with_last_sequence(p.last_sequence)
                                    .with_last_timestamp(-1)
                                    .with_coordinator_epoch(-1)
                                    .with_current_txn_start_offset(
                                        p.transaction_start_offset.unwrap_or(-1),
                                    )
                            })
                            .collect(),
                    ),
                ),
                Err(e) => partitions.push(
                    answer
                        .with_error_code(ResponseError::UnknownServerError.code())
                        .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                ),
            }
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(state: TransactionState, started_at_ms: Option<i64>) -> TransactionListing {
        TransactionListing {
            transactional_id: "t".into(),
            producer_id: 7,
            epoch: 0,
            timeout_ms: 60_000,
            state,
            started_at_ms,
            partitions: Vec::new(),
        }
    }

    #[test]
    fn every_filter_must_pass() {
        let ongoing = listing(TransactionState::Ongoing, Some(1_000));
        let all = ListTransactionsRequest::default().with_duration_filter(-1);
        assert!(listed(&ongoing, &all, 2_000));
        let by_state = all
            .clone()
            .with_state_filters(vec![StrBytes::from_static_str("CompleteCommit")]);
        assert!(!listed(&ongoing, &by_state, 2_000));
        let by_producer = all.clone().with_producer_id_filters(vec![ProducerId(8)]);
        assert!(!listed(&ongoing, &by_producer, 2_000));
        let long = all.clone().with_duration_filter(500);
        assert!(listed(&ongoing, &long, 2_000));
        assert!(!listed(&ongoing, &long, 1_200));
        assert!(!listed(
            &listing(TransactionState::Empty, None),
            &long,
            2_000
        ));
    }
}
