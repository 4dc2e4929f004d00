//! Fetch: whole stored batches, byte for byte with their base offsets
//! patched, from the [`Reader`](streamhouse_storage::Reader), starting with
//! the batch that holds the fetch offset (the client skips the records
//! before it). The answer waits up to `max_wait_ms` for `min_bytes`,
//! woken by this agent's commits and polling for other agents'. Fetch
//! sessions are not kept: every answer has session id 0, which tells the
//! client to send full fetches. A client whose `client.rack` (v11+) names
//! another zone than this agent's, where an agent is live, is answered
//! with that agent as its preferred read replica and no records (KIP-392),
//! so it reads in its own zone.

use std::ops::RangeInclusive;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};
use streamhouse_proto::ErrorCode;

use super::errors::{kafka_code, storage_code};
use super::{Broker, brokers};
use crate::error::bounded;

/// Fetch versions served: record batch v2 (v4) up to v12, the last that
/// names topics (v13+ names topic ids).
pub(super) const VERSIONS: RangeInclusive<i16> = 4..=12;

/// How often a waiting fetch looks for other agents' commits.
const POLL: Duration = Duration::from_millis(5);

/// A request refused as a whole (Fetch v7+ has a top-level error code).
pub(super) fn refuse(code: i16) -> FetchResponse {
    FetchResponse::default().with_error_code(code)
}

pub(super) async fn handle(broker: &Broker, request: FetchRequest, version: i16) -> FetchResponse {
    let partitions: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
    let refusal = if partitions > broker.limits.max_partitions_per_request {
        Some(ResponseError::InvalidRequest.code())
    } else if broker.shutting_down.load(Ordering::Relaxed) {
        Some(kafka_code(ErrorCode::AgentShuttingDown))
    } else {
        None
    };
    if let Some(code) = refusal {
        return answer(
            request
                .topics
                .iter()
                .map(|t| {
                    FetchableTopicResponse::default()
                        .with_topic(t.topic.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| failed(p.partition, code))
                                .collect(),
                        )
                })
                .collect(),
        );
    }
    if version >= 11
        && !request.rack_id.is_empty()
        && broker.zone.as_deref() != Some(request.rack_id.as_str())
        && let Some(redirected) = redirect(broker, &request).await
    {
        return redirected;
    }
    let max_bytes = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(broker.limits.max_fetch_bytes);
    let wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0))
        .min(broker.limits.max_fetch_wait);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let committed = version >= 4 && request.isolation_level == 1;
    let deadline = tokio::time::Instant::now() + wait;
    let mut commits = broker.commits.clone();
    loop {
        commits.mark_unchanged();
        let (topics, bytes, any_error) = fetch_once(broker, &request, max_bytes, committed).await;
        if bytes >= min_bytes || any_error || tokio::time::Instant::now() >= deadline {
            metrics::counter!("streamhouse_fetch_bytes_total").increment(bytes as u64);
            return answer(topics);
        }
        tokio::select! {
            _ = commits.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn answer(topics: Vec<FetchableTopicResponse>) -> FetchResponse {
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(topics)
}

pub(super) fn failed(partition: i32, code: i16) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
        .with_records(Some(Bytes::new()))
}

/// One pass over every partition (read concurrently, see
/// [`crate::fetch`]): the answers, the record bytes they hold, and whether
/// any partition failed.
async fn fetch_once(
    broker: &Broker,
    request: &FetchRequest,
    max_bytes: usize,
    committed: bool,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let reads: Vec<_> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().filter_map(|p| {
                Some(crate::fetch::PartitionRead {
                    topic: t.topic.0.as_str(),
                    partition: u32::try_from(p.partition).ok()?,
                    offset: p.fetch_offset,
                    max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                })
            })
        })
        .collect();
    let (results, total) = crate::fetch::fetch(&broker.reader, &reads, max_bytes, committed).await;
    let mut results = results.into_iter();
    let mut any_error = false;
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let topic = t.topic.0.as_str();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let Ok(partition) = u32::try_from(p.partition) else {
                any_error = true;
                partitions.push(failed(
                    p.partition,
                    ResponseError::UnknownTopicOrPartition.code(),
                ));
                continue;
            };
            match results.next().expect("a result per valid partition") {
                Ok(r) => {
                    let aborted = committed.then(|| {
                        r.aborted
                            .iter()
                            .map(|a| {
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(a.producer_id))
                                    .with_first_offset(a.first_offset)
                            })
                            .collect()
                    });
                    partitions.push(
                        PartitionData::default()
                            .with_partition_index(p.partition)
                            .with_high_watermark(r.high_watermark)
                            .with_last_stable_offset(r.last_stable_offset)
                            .with_log_start_offset(r.log_start_offset)
                            .with_aborted_transactions(aborted)
                            .with_preferred_read_replica(BrokerId(-1))
                            .with_records(Some(r.records)),
                    );
                }
                Err(e) => {
                    any_error = true;
                    tracing::info!(topic = %bounded(topic), partition, error = %e, "Kafka fetch error");
                    partitions.push(failed(p.partition, storage_code(&e)));
                }
            }
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    (topics, total, any_error)
}

/// Every partition with a live agent of the client's zone as its preferred
/// read replica, or `None` when that zone has none.
async fn redirect(broker: &Broker, request: &FetchRequest) -> Option<FetchResponse> {
    let rack = request.rack_id.as_str();
    let brokers = brokers::live(broker).await.ok()?;
    if !brokers.iter().any(|b| b.rack.as_deref() == Some(rack)) {
        return None;
    }
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let Ok(partition) = u32::try_from(p.partition) else {
                partitions.push(failed(
                    p.partition,
                    ResponseError::UnknownTopicOrPartition.code(),
                ));
                continue;
            };
            let replica = brokers::leader_for(&brokers, Some(rack), &t.topic, partition);
            partitions.push(
                match broker.reader.partition_state(&t.topic, partition).await {
                    Ok(s) => PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_high_watermark(s.next_offset)
                        .with_last_stable_offset(s.last_stable_offset)
                        .with_log_start_offset(s.log_start_offset)
                        .with_preferred_read_replica(BrokerId(replica.unwrap_or(-1)))
                        .with_records(Some(Bytes::new())),
                    Err(e) => failed(p.partition, storage_code(&e)),
                },
            );
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    Some(answer(topics))
}
