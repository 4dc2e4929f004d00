//! ListOffsets: the earliest offset (-2), the latest (-1; the last stable
//! offset for read_committed), the record with the largest timestamp (-3,
//! the first such record), or the first offset whose record timestamp is at
//! or after a time, with that record's timestamp.

use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::Broker;
use super::errors::storage_code;

/// ListOffsets versions served (v8+ add queries for tiered storage).
pub(super) const VERSIONS: RangeInclusive<i16> = 1..=7;

const EARLIEST: i64 = -2;
const LATEST: i64 = -1;
const MAX_TIMESTAMP: i64 = -3;

/// Segments listed per metadata query while looking for the largest
/// timestamp.
const SEGMENTS_PER_QUERY: u32 = 1000;

/// Every partition refused with `code`.
pub(super) fn refuse(request: &ListOffsetsRequest, code: i16) -> ListOffsetsResponse {
    ListOffsetsResponse::default().with_topics(
        request
            .topics
            .iter()
            .map(|t| {
                ListOffsetsTopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| failed(p.partition_index, code))
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn failed(partition: i32, code: i16) -> ListOffsetsPartitionResponse {
    ListOffsetsPartitionResponse::default()
        .with_partition_index(partition)
        .with_error_code(code)
        .with_timestamp(-1)
        .with_offset(-1)
        .with_leader_epoch(-1)
}

pub(super) async fn handle(
    broker: &Broker,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let partitions: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
    if partitions > broker.limits.max_partitions_per_request {
        return refuse(&request, ResponseError::InvalidRequest.code());
    }
    let committed = version >= 2 && request.isolation_level == 1;
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let mut out = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let Ok(partition) = u32::try_from(p.partition_index) else {
                out.push(failed(
                    p.partition_index,
                    ResponseError::UnknownTopicOrPartition.code(),
                ));
                continue;
            };
            out.push(
                match lookup(broker, &t.name, partition, p.timestamp, committed).await {
                    Ok((offset, timestamp)) => ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_offset(offset)
                        .with_timestamp(timestamp)
                        // From v4 (the codec refuses the field before).
                        .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
                    Err(e) => failed(p.partition_index, storage_code(&e)),
                },
            );
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(out),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// The offset and timestamp answered for one query; offset -1 and
/// timestamp -1 when no record is that recent.
async fn lookup(
    broker: &Broker,
    topic: &str,
    partition: u32,
    timestamp: i64,
    committed: bool,
) -> streamhouse_storage::Result<(i64, i64)> {
    let state = broker.reader.partition_state(topic, partition).await?;
    match timestamp {
        EARLIEST => return Ok((state.log_start_offset, -1)),
        LATEST if committed => return Ok((state.last_stable_offset, -1)),
        LATEST => return Ok((state.next_offset, -1)),
        MAX_TIMESTAMP => return max_timestamp(broker, topic, partition).await,
        _ => {}
    }
    let Some(offset) = broker
        .reader
        .offset_for_timestamp(topic, partition, timestamp)
        .await?
    else {
        return Ok((-1, -1));
    };
    let offset = offset.max(state.log_start_offset);
    if offset >= state.next_offset {
        return Ok((-1, -1));
    }
    // The record's own timestamp, from the batch that holds it.
    let read = broker.reader.read(topic, partition, offset, 1).await?;
    let found = read.batches.first().and_then(|raw| {
        let batch = streamhouse_core::RecordBatch::decode(raw).ok()?;
        batch
            .iter()
            .find(|(o, _, _)| *o >= offset)
            .map(|(o, ts, _)| (o, ts))
    });
    Ok(found.unwrap_or((offset, timestamp)))
}

/// The first record with the partition's largest timestamp: its offset and
/// timestamp, or -1 and -1 for an empty partition.
async fn max_timestamp(
    broker: &Broker,
    topic: &str,
    partition: u32,
) -> streamhouse_storage::Result<(i64, i64)> {
    let t = broker
        .metadata
        .get_topic(topic)
        .await?
        .ok_or_else(|| streamhouse_storage::Error::TopicNotFound(topic.to_string()))?;
    let mut best: Option<streamhouse_metadata::Segment> = None;
    let mut from = 0;
    loop {
        let segments = broker
            .metadata
            .segments(t.id, partition, from, SEGMENTS_PER_QUERY)
            .await?;
        let Some(last) = segments.last() else { break };
        from = last.last_offset + 1;
        let full = segments.len() == SEGMENTS_PER_QUERY as usize;
        for s in segments {
            if best
                .as_ref()
                .is_none_or(|b| s.max_timestamp > b.max_timestamp)
            {
                best = Some(s);
            }
        }
        if !full {
            break;
        }
    }
    let Some(segment) = best else {
        return Ok((-1, -1));
    };
    let data = broker.reader.segment_bytes(&segment).await?;
    let mut base = segment.base_offset;
    for item in streamhouse_core::batches(&data) {
        let (header, raw) = item.map_err(|e| streamhouse_storage::Error::CorruptObject {
            key: segment.object_key.clone(),
            reason: e.to_string(),
        })?;
        if header.max_timestamp == segment.max_timestamp {
            let mut batch =
                streamhouse_core::RecordBatch::decode(&data.slice_ref(raw)).map_err(|e| {
                    streamhouse_storage::Error::CorruptObject {
                        key: segment.object_key.clone(),
                        reason: e.to_string(),
                    }
                })?;
            batch.base_offset = base;
            if let Some((offset, ts, _)) =
                batch.iter().find(|(_, ts, _)| *ts == segment.max_timestamp)
            {
                return Ok((offset, ts));
            }
        }
        base += header.offset_span();
    }
    // The segment's maximum is its last record's as far as we can find.
    Ok((segment.last_offset, segment.max_timestamp))
}
