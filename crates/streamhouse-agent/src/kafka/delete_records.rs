//! DeleteRecords: advances partitions' log start offsets (the metadata
//! store drops the segments wholly below), answering each partition's new
//! low watermark.
//!
//! An offset moves the log start up to it; -1 moves it to the high
//! watermark. Unlike Kafka, which allows any offset up to the high
//! watermark, the log start never passes the last stable offset: with a
//! transaction open, -1 stops at its first offset, and an offset past the
//! last stable offset gets OFFSET_OUT_OF_RANGE, as one past the high
//! watermark does. An offset at or below the log start changes nothing.
//! The request's `timeout_ms` (Kafka's wait for followers to move their
//! log starts) has nothing to wait for: the answer comes after the
//! metadata commit, which every agent reads.

use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use streamhouse_metadata::Error as MetadataError;

use super::Broker;
use super::errors::metadata_code;

/// DeleteRecords versions served: all the codec knows (v2 is flexible).
pub(super) const VERSIONS: RangeInclusive<i16> = 0..=2;

/// The offset meaning "the high watermark".
const HIGH_WATERMARK: i64 = -1;

fn result(partition: i32, outcome: Result<i64, i16>) -> DeleteRecordsPartitionResult {
    let r = DeleteRecordsPartitionResult::default().with_partition_index(partition);
    match outcome {
        Ok(low) => r.with_low_watermark(low),
        Err(code) => r.with_low_watermark(-1).with_error_code(code),
    }
}

/// The new log start of one partition, or the Kafka error code.
async fn advance(broker: &Broker, topic: &str, partition: i32, offset: i64) -> Result<i64, i16> {
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    let out_of_range = ResponseError::OffsetOutOfRange.code();
    let partition = u32::try_from(partition).map_err(|_| unknown)?;
    let offset = match offset {
        HIGH_WATERMARK => None,
        o if o < 0 => return Err(out_of_range),
        o => Some(o),
    };
    let t = broker
        .metadata
        .get_topic(topic)
        .await
        .map_err(|e| metadata_code(&e))?
        .ok_or(unknown)?;
    if partition >= t.partition_count {
        return Err(unknown);
    }
    match broker
        .metadata
        .advance_log_start(t.id, partition, offset)
        .await
    {
        Ok(start) => {
            tracing::info!(
                topic,
                partition,
                log_start = start,
                "records deleted by a Kafka client"
            );
            Ok(start)
        }
        Err(MetadataError::LogStartOutOfRange { .. }) => Err(out_of_range),
        Err(e) => {
            if matches!(e, MetadataError::Database { .. }) {
                tracing::warn!(topic, partition, error = %e, "DeleteRecords failed");
            }
            Err(metadata_code(&e))
        }
    }
}

pub(super) async fn handle(
    broker: &Broker,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let partitions: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
    let too_many = partitions > broker.limits.max_partitions_per_request;
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let mut out = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let outcome = if too_many {
                Err(ResponseError::InvalidRequest.code())
            } else {
                advance(broker, &t.name, p.partition_index, p.offset).await
            };
            out.push(result(p.partition_index, outcome));
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(out),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
