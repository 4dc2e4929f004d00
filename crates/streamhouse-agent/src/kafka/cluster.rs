//! DescribeCluster and OffsetForLeaderEpoch: the brokers as Metadata lists
//! them, and one leader epoch (0) per partition whose end is the high
//! watermark.

use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use super::brokers;
use super::errors::storage_code;

pub(super) const DESCRIBE_CLUSTER_VERSIONS: RangeInclusive<i16> = 0..=2;
pub(super) const LEADER_EPOCH_VERSIONS: RangeInclusive<i16> = 2..=4;

pub(super) async fn describe(
    broker: &Broker,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_static_str(super::metadata::CLUSTER_ID));
    match brokers::live(broker).await {
        Ok(b) => response
            .with_controller_id(BrokerId(b.first().map_or(-1, |b| b.node_id)))
            .with_brokers(
                b.into_iter()
                    .map(|b| {
                        DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(b.node_id))
                            .with_host(StrBytes::from_string(b.host))
                            .with_port(b.port)
                            .with_rack(b.rack.map(StrBytes::from_string))
                    })
                    .collect(),
            ),
        Err(e) => response
            .with_controller_id(BrokerId(-1))
            .with_error_code(ResponseError::UnknownServerError.code())
            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
    }
}

/// Every partition has had one leader epoch, 0: asked for epoch 0 (or a
/// later one), its end is the high watermark; an earlier epoch does not
/// exist.
pub(super) async fn leader_epochs(
    broker: &Broker,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let entry = EpochEndOffset::default().with_partition(p.partition);
            let state = match u32::try_from(p.partition) {
                Ok(partition) => broker
                    .reader
                    .partition_state(&t.topic, partition)
                    .await
                    .map_err(|e| storage_code(&e)),
                Err(_) => Err(ResponseError::UnknownTopicOrPartition.code()),
            };
            partitions.push(match state {
                Ok(_) if p.leader_epoch < 0 => entry.with_leader_epoch(-1).with_end_offset(-1),
                Ok(s) => entry.with_leader_epoch(0).with_end_offset(s.next_offset),
                Err(code) => entry
                    .with_error_code(code)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
