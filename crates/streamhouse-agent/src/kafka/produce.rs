//! Produce: every partition's record batches go through
//! [`crate::produce`], the validation and pipeline of gRPC produce, and
//! the answer comes after their commit (acks 1 and -1 alike: a commit is
//! the only acknowledgement there is; acks 0 gets no answer at all).

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use streamhouse_proto::ErrorCode;

use super::Broker;
use super::errors::kafka_code;
use crate::error::bounded;
use crate::produce::{self, BatchFailure, PartitionInput, PartitionOutcome, Submitted};

/// Produce versions served: record batch v2 (v3) up to v10. v11+ adds
/// nothing a broker without leader changes needs; v12+ moves to topic ids.
pub(super) const VERSIONS: RangeInclusive<i16> = 3..=10;

/// What becomes of one partition of the request.
enum Slot {
    /// Answered without the pipeline.
    Refused(i16, String),
    /// The index of the partition's outcome among the submitted ones.
    Submitted(usize),
}

/// A request whose batches are in the pipeline.
pub(super) struct Committed {
    topics: Vec<(TopicName, Vec<(i32, Slot)>)>,
    submitted: Submitted,
    /// The request's `timeout_ms`, when positive.
    timeout: Option<Duration>,
}

/// Every partition refused with `code`.
pub(super) fn refuse(request: &ProduceRequest, code: i16) -> ProduceResponse {
    ProduceResponse::default().with_responses(
        request
            .topic_data
            .iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| partition_error(p.index, code, None))
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn partition_error(index: i32, code: i16, message: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_error_message(message.map(StrBytes::from_string))
}

/// Checks the request and submits its valid partitions to the pipeline.
pub(super) async fn submit(broker: &Arc<Broker>, request: ProduceRequest) -> Committed {
    let partitions: usize = request
        .topic_data
        .iter()
        .map(|t| t.partition_data.len())
        .sum();
    let refusal = if !matches!(request.acks, -1..=1) {
        Some((
            ResponseError::InvalidRequiredAcks.code(),
            format!("acks {} is not -1, 0 or 1", request.acks),
        ))
    } else if partitions > broker.limits.max_partitions_per_request {
        Some((
            ResponseError::InvalidRequest.code(),
            format!(
                "the request names {partitions} partitions, over the limit of {}",
                broker.limits.max_partitions_per_request
            ),
        ))
    } else if broker.shutting_down.load(Ordering::Relaxed) {
        Some((
            kafka_code(ErrorCode::AgentShuttingDown),
            "the agent is shutting down; use another agent".to_string(),
        ))
    } else {
        None
    };
    let mut owned: Vec<(String, u32, Bytes)> = Vec::new();
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for t in request.topic_data {
        let mut slots = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let slot = match (&refusal, u32::try_from(p.index), p.records) {
                (Some((code, message)), _, _) => Slot::Refused(*code, message.clone()),
                (None, Err(_), _) => Slot::Refused(
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("partition {} does not exist", p.index),
                ),
                (None, Ok(_), None) => Slot::Refused(
                    ResponseError::InvalidRecord.code(),
                    "no records".to_string(),
                ),
                (None, Ok(partition), Some(records)) => {
                    owned.push((t.name.0.to_string(), partition, records));
                    Slot::Submitted(owned.len() - 1)
                }
            };
            slots.push((p.index, slot));
        }
        topics.push((t.name, slots));
    }
    let inputs: Vec<PartitionInput<'_>> = owned
        .iter()
        .map(|(topic, partition, records)| PartitionInput {
            topic,
            partition: *partition,
            records,
        })
        .collect();
    let submitted = produce::submit(&broker.pipeline, &inputs).await;
    Committed {
        topics,
        submitted,
        timeout: u64::try_from(request.timeout_ms)
            .ok()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis),
    }
}

impl Committed {
    /// Waits for the commits (up to the request's timeout: partitions still
    /// uncommitted then are REQUEST_TIMED_OUT, as in Kafka; their batches may
    /// still commit, and an idempotent producer's retry finds them) and
    /// builds the answer.
    pub(super) async fn answer(self) -> ProduceResponse {
        let committed = self.submitted.committed();
        let outcomes = match self.timeout {
            Some(timeout) => tokio::time::timeout(timeout, committed).await.ok(),
            None => Some(committed.await),
        };
        let mut outcomes: Vec<Option<PartitionOutcome>> = match outcomes {
            Some(outcomes) => outcomes.into_iter().map(Some).collect(),
            None => Vec::new(),
        };
        let responses = self
            .topics
            .into_iter()
            .map(|(name, slots)| {
                let partition_responses = slots
                    .into_iter()
                    .map(|(index, slot)| match slot {
                        Slot::Refused(code, message) => partition_error(index, code, Some(message)),
                        Slot::Submitted(i) => match outcomes.get_mut(i).and_then(Option::take) {
                            Some(outcome) => partition_answer(&name, index, outcome),
                            None => partition_error(
                                index,
                                ResponseError::RequestTimedOut.code(),
                                Some("not committed within the request's timeout".into()),
                            ),
                        },
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses)
            })
            .collect();
        ProduceResponse::default().with_responses(responses)
    }
}

/// One partition's answer: the first batch's base offset, or the first
/// failure. A batch delivered earlier (DUPLICATE_SEQUENCE_NUMBER) is a
/// success for Kafka's idempotent producers.
fn partition_answer(
    topic: &TopicName,
    index: i32,
    outcome: PartitionOutcome,
) -> PartitionProduceResponse {
    match outcome {
        PartitionOutcome::Refused { code, message } => {
            tracing::info!(topic = %bounded(topic), partition = index, ?code, %message, "Kafka produce refused");
            partition_error(index, kafka_code(code), Some(message))
        }
        PartitionOutcome::Batches(results) => {
            let mut base_offset = None;
            for result in results {
                match result {
                    Ok(a) => {
                        metrics::counter!("streamhouse_produce_records_total")
                            .increment(a.offset_span as u64);
                        base_offset.get_or_insert(a.base_offset);
                    }
                    Err(BatchFailure { code, message }) => {
                        tracing::info!(topic = %bounded(topic), partition = index, ?code, %message, "Kafka produce rejected");
                        return partition_error(index, kafka_code(code), Some(message));
                    }
                }
            }
            PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(base_offset.unwrap_or(-1))
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1)
        }
    }
}
