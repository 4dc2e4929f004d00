//! Malformed and unsupported Kafka frames: bad sizes, truncated frames,
//! unknown API keys, versions outside the served ranges, forged array
//! counts and garbage. Each gets UNSUPPORTED_VERSION or a closed
//! connection; the agent keeps serving other connections, and requests
//! pipelined on one connection are answered in order.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchResponse, InitProducerIdResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use streamhouse_agent::RunningAgent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
const UNSUPPORTED_VERSION: i16 = 35;

async fn agent(dir: &tempfile::TempDir) -> RunningAgent {
    common::kafka::agent_with(dir, |c| c.limits.max_request_bytes = 1 << 20).await
}

/// A request frame: size, header (at the API's header version), body.
fn frame<T: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &T) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("frames-test")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, api.request_header_version(version))
        .unwrap();
    body.encode(&mut payload, version).unwrap();
    raw(&payload)
}

/// `payload` behind its size.
fn raw(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(payload.len() as i32);
    out.extend_from_slice(payload);
    out.freeze()
}

/// A header for `api`/`version` with `body` bytes after it (the body is not
/// encoded by the codec: it may be anything).
fn frame_with_body(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Bytes {
    let mut payload = BytesMut::new();
    payload.put_i16(api_key);
    payload.put_i16(version);
    payload.put_i32(correlation_id);
    payload.put_i16(-1); // null client id
    if let Ok(api) = ApiKey::try_from(api_key)
        && api.request_header_version(version) >= 2
    {
        payload.put_u8(0); // no tagged fields
    }
    payload.extend_from_slice(body);
    raw(&payload)
}

fn api_versions(version: i16, correlation_id: i32) -> Bytes {
    let body = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("frames-test"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    frame(ApiKey::ApiVersions, version, correlation_id, &body)
}

/// The next answer's bytes, or `None` when the agent closed the
/// connection.
async fn answer(stream: &mut TcpStream) -> Option<Bytes> {
    let read = async {
        let size = stream.read_i32().await.ok()?;
        let mut buf = vec![0; usize::try_from(size).ok()?];
        stream.read_exact(&mut buf).await.ok()?;
        Some(Bytes::from(buf))
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the agent neither answered nor closed the connection")
}

/// Decodes an answer of `api` at `version`; its correlation id and body.
fn decode<T: Decodable>(api: ApiKey, version: i16, mut bytes: Bytes) -> (i32, T) {
    let header = ResponseHeader::decode(&mut bytes, api.response_header_version(version)).unwrap();
    let body = T::decode(&mut bytes, version).unwrap();
    assert!(
        !bytes.has_remaining(),
        "{api:?} v{version}: bytes left over"
    );
    (header.correlation_id, body)
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// A fresh connection is served.
async fn assert_serves(addr: SocketAddr) {
    let mut s = connect(addr).await;
    s.write_all(&api_versions(3, 7)).await.unwrap();
    let (id, r): (i32, ApiVersionsResponse) =
        decode(ApiKey::ApiVersions, 3, answer(&mut s).await.unwrap());
    assert_eq!((id, r.error_code), (7, 0));
    assert!(
        r.api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16)
    );
}

/// Sends `bytes` on a new connection and expects it closed without an
/// answer.
async fn assert_closed(addr: SocketAddr, bytes: &[u8], what: &str) {
    let mut s = connect(addr).await;
    s.write_all(bytes).await.unwrap();
    assert!(answer(&mut s).await.is_none(), "{what}: answered");
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let addr = agent.kafka_addr().unwrap();
    // A client that stays connected throughout.
    let mut bystander = connect(addr).await;
    bystander.write_all(&api_versions(3, 1)).await.unwrap();
    assert!(answer(&mut bystander).await.is_some());

    assert_closed(addr, &(-1i32).to_be_bytes(), "negative size").await;
    assert_closed(addr, &i32::MAX.to_be_bytes(), "size over the limit").await;
    assert_closed(
        addr,
        &[0, 0, 0, 4, 0, 18, 0, 3],
        "frame shorter than a header",
    )
    .await;
    assert_closed(addr, &frame_with_body(999, 0, 1, b""), "unknown API key").await;
    assert_closed(
        addr,
        &frame_with_body(ApiKey::SaslHandshake as i16, 1, 1, b""),
        "API not served",
    )
    .await;
    assert_closed(
        addr,
        &frame_with_body(ApiKey::Produce as i16, 2, 1, &[0; 20]),
        "version below every Kafka release's",
    )
    .await;
    // Array counts of 2^31-1 elements in a small frame.
    for (api, version, prefix) in [
        (ApiKey::Metadata, 1, vec![]),
        (ApiKey::Produce, 3, vec![0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30]),
        (ApiKey::Fetch, 4, vec![0; 17]),
        (ApiKey::ListOffsets, 2, vec![0; 5]),
        (
            ApiKey::AddPartitionsToTxn,
            1,
            vec![0, 1, b'x', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        ),
        (
            ApiKey::TxnOffsetCommit,
            2,
            vec![0, 1, b'x', 0, 1, b'g', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        ),
        (ApiKey::ListTransactions, 1, vec![]),
    ] {
        let mut body = prefix;
        body.extend_from_slice(&i32::MAX.to_be_bytes());
        body.extend_from_slice(&[0; 32]);
        assert_closed(
            addr,
            &frame_with_body(api as i16, version, 1, &body),
            &format!("{api:?} with a forged count"),
        )
        .await;
    }
    // Truncated: the size promises more than ever comes.
    let mut s = connect(addr).await;
    s.write_all(&[0, 0, 0, 100, 0, 3, 0, 1, 0, 0])
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    assert!(answer(&mut s).await.is_none(), "truncated frame answered");
    // Garbage bodies for every served API at every served version.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..600 {
        let served = [
            (ApiKey::Produce, 3..=10),
            (ApiKey::Fetch, 4..=12),
            (ApiKey::ListOffsets, 1..=7),
            (ApiKey::Metadata, 0..=12),
            (ApiKey::InitProducerId, 0..=4),
            (ApiKey::OffsetCommit, 2..=9),
            (ApiKey::OffsetFetch, 1..=9),
            (ApiKey::FindCoordinator, 0..=6),
            (ApiKey::CreateTopics, 2..=7),
            (ApiKey::DeleteTopics, 1..=6),
            (ApiKey::DeleteRecords, 0..=2),
            (ApiKey::OffsetForLeaderEpoch, 2..=4),
            (ApiKey::DescribeConfigs, 1..=4),
            (ApiKey::AlterConfigs, 0..=2),
            (ApiKey::CreatePartitions, 0..=3),
            (ApiKey::IncrementalAlterConfigs, 0..=1),
            (ApiKey::DescribeCluster, 0..=2),
            (ApiKey::AddPartitionsToTxn, 0..=3),
            (ApiKey::AddOffsetsToTxn, 0..=4),
            (ApiKey::TxnOffsetCommit, 0..=4),
            (ApiKey::EndTxn, 0..=5),
            (ApiKey::ListTransactions, 0..=1),
            (ApiKey::DescribeTransactions, 0..=0),
            (ApiKey::DescribeProducers, 0..=0),
            (ApiKey::ConsumerGroupHeartbeat, 0..=1),
            (ApiKey::ConsumerGroupDescribe, 0..=1),
            (ApiKey::JoinGroup, 0..=9),
            (ApiKey::SyncGroup, 0..=5),
            (ApiKey::Heartbeat, 0..=4),
            (ApiKey::LeaveGroup, 0..=5),
            (ApiKey::ListGroups, 0..=5),
            (ApiKey::DescribeGroups, 0..=5),
            (ApiKey::DeleteGroups, 0..=2),
            (ApiKey::OffsetDelete, 0..=0),
            (ApiKey::DescribeAcls, 1..=3),
            (ApiKey::CreateAcls, 1..=3),
            (ApiKey::DeleteAcls, 1..=3),
            (ApiKey::DescribeUserScramCredentials, 0..=0),
            (ApiKey::AlterUserScramCredentials, 0..=0),
        ];
        let (api, versions) = served[(next() % served.len() as u64) as usize].clone();
        let span = (versions.end() - versions.start() + 1) as u64;
        let version = versions.start() + (next() % span) as i16;
        let len = (next() % 64) as usize;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut s = connect(addr).await;
        s.write_all(&frame_with_body(api as i16, version, round, &body))
            .await
            .unwrap();
        // Answered or closed, never a hang or a crash.
        let _ = answer(&mut s).await;
    }
    assert_serves(addr).await;
    bystander.write_all(&api_versions(3, 2)).await.unwrap();
    let (id, _): (i32, ApiVersionsResponse) = decode(
        ApiKey::ApiVersions,
        3,
        answer(&mut bystander).await.unwrap(),
    );
    assert_eq!(id, 2);
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn unsupported_versions_are_answered_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let addr = agent.kafka_addr().unwrap();
    let mut s = connect(addr).await;

    // ApiVersions of a version we do not serve: answered at v0, with our
    // versions; the connection stays usable.
    s.write_all(&frame_with_body(ApiKey::ApiVersions as i16, 99, 5, &[0; 8]))
        .await
        .unwrap();
    let (id, r): (i32, ApiVersionsResponse) =
        decode(ApiKey::ApiVersions, 0, answer(&mut s).await.unwrap());
    assert_eq!((id, r.error_code), (5, UNSUPPORTED_VERSION));
    let served: Vec<(i16, i16, i16)> = r
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    assert_eq!(
        served,
        [
            (0, 3, 10), // Produce
            (1, 4, 12), // Fetch
            (2, 1, 7),  // ListOffsets
            (3, 0, 12), // Metadata
            (8, 2, 9),  // OffsetCommit
            (9, 1, 9),  // OffsetFetch
            (10, 0, 6), // FindCoordinator
            (18, 0, 3), // ApiVersions
            (17, 1, 1), // SaslHandshake
            (36, 0, 2), // SaslAuthenticate
            (19, 2, 7), // CreateTopics
            (20, 1, 6), // DeleteTopics
            (21, 0, 2), // DeleteRecords
            (22, 0, 4), // InitProducerId
            (23, 2, 4), // OffsetForLeaderEpoch
            (32, 1, 4), // DescribeConfigs
            (33, 0, 2), // AlterConfigs
            (37, 0, 3), // CreatePartitions
            (44, 0, 1), // IncrementalAlterConfigs
            (60, 0, 2), // DescribeCluster
            (11, 0, 9), // JoinGroup
            (14, 0, 5), // SyncGroup
            (12, 0, 4), // Heartbeat
            (13, 0, 5), // LeaveGroup
            (16, 0, 5), // ListGroups
            (15, 0, 5), // DescribeGroups
            (42, 0, 2), // DeleteGroups
            (47, 0, 0), // OffsetDelete
            (68, 0, 1), // ConsumerGroupHeartbeat
            (69, 0, 1), // ConsumerGroupDescribe
            (24, 0, 3), // AddPartitionsToTxn
            (25, 0, 4), // AddOffsetsToTxn
            (28, 0, 4), // TxnOffsetCommit
            (26, 0, 5), // EndTxn
            (66, 0, 1), // ListTransactions
            (65, 0, 0), // DescribeTransactions
            (61, 0, 0), // DescribeProducers
            (29, 1, 3), // DescribeAcls
            (30, 1, 3), // CreateAcls
            (31, 1, 3), // DeleteAcls
            (50, 0, 0), // DescribeUserScramCredentials
            (51, 0, 0), // AlterUserScramCredentials
        ]
    );
    // The brokers' batched AddPartitionsToTxn (v4+) is refused in its own
    // answer.
    s.write_all(&frame(
        ApiKey::AddPartitionsToTxn,
        4,
        8,
        &kafka_protocol::messages::AddPartitionsToTxnRequest::default(),
    ))
    .await
    .unwrap();
    let (id, r): (i32, kafka_protocol::messages::AddPartitionsToTxnResponse) =
        decode(ApiKey::AddPartitionsToTxn, 4, answer(&mut s).await.unwrap());
    assert_eq!((id, r.error_code), (8, UNSUPPORTED_VERSION));

    // Versions the codec knows but we do not serve.
    s.write_all(&frame(ApiKey::Metadata, 13, 6, &MetadataRequest::default()))
        .await
        .unwrap();
    let (id, r): (i32, MetadataResponse) =
        decode(ApiKey::Metadata, 13, answer(&mut s).await.unwrap());
    assert_eq!((id, r.error_code), (6, UNSUPPORTED_VERSION));

    s.write_all(&frame(
        ApiKey::Fetch,
        13,
        7,
        &kafka_protocol::messages::FetchRequest::default(),
    ))
    .await
    .unwrap();
    let (id, r): (i32, FetchResponse) = decode(ApiKey::Fetch, 13, answer(&mut s).await.unwrap());
    assert_eq!((id, r.error_code), (7, UNSUPPORTED_VERSION));

    s.write_all(&frame(
        ApiKey::InitProducerId,
        5,
        8,
        &kafka_protocol::messages::InitProducerIdRequest::default(),
    ))
    .await
    .unwrap();
    let (id, r): (i32, InitProducerIdResponse) =
        decode(ApiKey::InitProducerId, 5, answer(&mut s).await.unwrap());
    assert_eq!((id, r.error_code), (8, UNSUPPORTED_VERSION));

    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::new())),
                ]),
        ]);
    s.write_all(&frame(ApiKey::Produce, 11, 9, &produce))
        .await
        .unwrap();
    let (id, r): (i32, ProduceResponse) =
        decode(ApiKey::Produce, 11, answer(&mut s).await.unwrap());
    assert_eq!(id, 9);
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        UNSUPPORTED_VERSION
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let addr = agent.kafka_addr().unwrap();
    let mut s = connect(addr).await;
    let all_topics = MetadataRequest::default().with_topics(None);
    let mut burst = BytesMut::new();
    for id in 0..20 {
        if id % 2 == 0 {
            burst.extend_from_slice(&frame(ApiKey::Metadata, 12, id, &all_topics));
        } else {
            burst.extend_from_slice(&api_versions(3, id));
        }
    }
    s.write_all(&burst).await.unwrap();
    for id in 0..20 {
        let bytes = answer(&mut s).await.unwrap();
        let got = if id % 2 == 0 {
            let (got, r): (i32, MetadataResponse) = decode(ApiKey::Metadata, 12, bytes);
            assert_eq!(r.brokers.len(), 1);
            got
        } else {
            decode::<ApiVersionsResponse>(ApiKey::ApiVersions, 3, bytes).0
        };
        assert_eq!(got, id);
    }
    agent.shutdown().await.unwrap();
}

/// One request of `api` at `version` about topic `t` (3 partitions, with
/// records), group `g`, and topic `c{version}` to create (CreateTopics) or
/// `c{version + 1}` to delete (DeleteTopics).
fn request_of(api: ApiKey, version: i16) -> Option<Bytes> {
    use kafka_protocol::messages::*;
    let t = || TopicName(StrBytes::from_static_str("t"));
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let created = || TopicName(s(&format!("c{version}")));
    // DeleteTopics v1-v6 delete what CreateTopics v2-v7 created.
    let to_delete = || TopicName(s(&format!("c{}", version + 1)));
    let id = 100 + version as i32;
    Some(match api {
        ApiKey::Produce => {
            let records =
                streamhouse_core::RecordBatch::from_records([streamhouse_core::NewRecord::new(
                    1, None, "v",
                )])
                .encode()
                .unwrap();
            frame(
                api,
                version,
                id,
                &ProduceRequest::default()
                    .with_acks(-1)
                    .with_topic_data(vec![
                        TopicProduceData::default()
                            .with_name(t())
                            .with_partition_data(vec![
                                PartitionProduceData::default()
                                    .with_index(0)
                                    .with_records(Some(records)),
                            ]),
                    ]),
            )
        }
        ApiKey::Fetch => frame(
            api,
            version,
            id,
            &FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_bytes(1 << 20)
                .with_topics(vec![
                    fetch_request::FetchTopic::default()
                        .with_topic(t())
                        .with_partitions(vec![
                            fetch_request::FetchPartition::default()
                                .with_partition_max_bytes(1 << 20),
                        ]),
                ]),
        ),
        ApiKey::ListOffsets => frame(
            api,
            version,
            id,
            &ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    list_offsets_request::ListOffsetsTopic::default()
                        .with_name(t())
                        .with_partitions(
                            [-1i64, -2, 0]
                                .into_iter()
                                .chain((version >= 7).then_some(-3))
                                .map(|ts| {
                                    list_offsets_request::ListOffsetsPartition::default()
                                        .with_timestamp(ts)
                                })
                                .collect(),
                        ),
                ]),
        ),
        ApiKey::Metadata => frame(
            api,
            version,
            id,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(t())),
            ])),
        ),
        ApiKey::OffsetCommit => frame(
            api,
            version,
            id,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(t())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_committed_offset(1)
                                .with_committed_metadata(Some(s("m"))),
                        ]),
                ]),
        ),
        ApiKey::OffsetFetch if version >= 8 => frame(
            api,
            version,
            id,
            &OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("g"))),
            ]),
        ),
        ApiKey::OffsetFetch => frame(
            api,
            version,
            id,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(t())
                        .with_partition_indexes(vec![0, 1]),
                ])),
        ),
        ApiKey::FindCoordinator if version >= 4 => frame(
            api,
            version,
            id,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g")]),
        ),
        ApiKey::FindCoordinator => frame(
            api,
            version,
            id,
            &FindCoordinatorRequest::default().with_key(s("g")),
        ),
        ApiKey::ApiVersions => api_versions(version, id),
        ApiKey::CreateTopics => frame(
            api,
            version,
            id,
            &CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(created())
                    .with_num_partitions(1)
                    .with_replication_factor(1)
                    .with_configs(vec![
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(s("retention.ms"))
                            .with_value(Some(s("1000000"))),
                    ]),
            ]),
        ),
        ApiKey::DeleteTopics if version >= 6 => frame(
            api,
            version,
            id,
            &DeleteTopicsRequest::default().with_topics(vec![
                delete_topics_request::DeleteTopicState::default().with_name(Some(to_delete())),
            ]),
        ),
        ApiKey::DeleteTopics => frame(
            api,
            version,
            id,
            &DeleteTopicsRequest::default().with_topic_names(vec![to_delete()]),
        ),
        // Up to offset 1 of t (written by the Produce requests before):
        // the first version moves the log start, the others find it there.
        ApiKey::DeleteRecords => frame(
            api,
            version,
            id,
            &DeleteRecordsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![
                    delete_records_request::DeleteRecordsTopic::default()
                        .with_name(t())
                        .with_partitions(vec![
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(0)
                                .with_offset(1),
                        ]),
                ]),
        ),
        ApiKey::InitProducerId => frame(
            api,
            version,
            id,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(1000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        ApiKey::OffsetForLeaderEpoch => frame(
            api,
            version,
            id,
            &OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(t())
                        .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default(),
                        ]),
                ]),
        ),
        ApiKey::DescribeConfigs => frame(
            api,
            version,
            id,
            &DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t")),
            ]),
        ),
        ApiKey::AlterConfigs => frame(
            api,
            version,
            id,
            &AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_configs(vec![
                        alter_configs_request::AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_value(Some(s("2000000"))),
                    ]),
            ]),
        ),
        ApiKey::CreatePartitions => frame(
            api,
            version,
            id,
            &CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(t())
                    .with_count(4 + i32::from(version)),
            ]),
        ),
        ApiKey::IncrementalAlterConfigs => frame(
            api,
            version,
            id,
            &IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s("retention.bytes"))
                            .with_value(Some(s("1048576"))),
                    ]),
            ]),
        ),
        ApiKey::DescribeCluster => frame(api, version, id, &DescribeClusterRequest::default()),
        // Group jg{v} of one member "m", joined by JoinGroup v, synced by
        // SyncGroup v, kept by Heartbeat v and left by LeaveGroup v (in
        // the order ApiVersions lists them).
        ApiKey::JoinGroup => frame(
            api,
            version,
            id,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(s(&format!("jg{version}"))))
                .with_member_id(s("m"))
                .with_session_timeout_ms(30_000)
                .with_rebalance_timeout_ms(30_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Bytes::from_static(b"md")),
                ]),
        ),
        ApiKey::SyncGroup => frame(
            api,
            version,
            id,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(s(&format!("jg{version}"))))
                .with_member_id(s("m"))
                .with_generation_id(1)
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(s("m"))
                        .with_assignment(Bytes::from_static(b"a")),
                ]),
        ),
        ApiKey::Heartbeat => frame(
            api,
            version,
            id,
            &HeartbeatRequest::default()
                .with_group_id(GroupId(s(&format!("jg{version}"))))
                .with_member_id(s("m"))
                .with_generation_id(1),
        ),
        ApiKey::LeaveGroup => {
            let group = GroupId(s(&format!("jg{version}")));
            let request = if version >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(group)
                    .with_members(vec![
                        leave_group_request::MemberIdentity::default().with_member_id(s("m")),
                    ])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(group)
                    .with_member_id(s("m"))
            };
            frame(api, version, id, &request)
        }
        ApiKey::ListGroups => frame(api, version, id, &ListGroupsRequest::default()),
        ApiKey::DescribeGroups => frame(
            api,
            version,
            id,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("jg9"))]),
        ),
        ApiKey::DeleteGroups => frame(
            api,
            version,
            id,
            &DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(s(&format!("jg{version}")))]),
        ),
        ApiKey::OffsetDelete => frame(
            api,
            version,
            id,
            &OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("jg3")))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(t())
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default(),
                        ]),
                ]),
        ),
        // Joins group `frames` (v0 with an id the agent makes, v1 with its
        // own), which ConsumerGroupDescribe then describes.
        ApiKey::ConsumerGroupHeartbeat => frame(
            api,
            version,
            id,
            &ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(s("frames")))
                .with_member_id(s(if version == 0 { "" } else { "frames-member" }))
                .with_rebalance_timeout_ms(30_000)
                .with_subscribed_topic_names(Some(vec![t()]))
                .with_topic_partitions(Some(Vec::new())),
        ),
        ApiKey::ConsumerGroupDescribe => frame(
            api,
            version,
            id,
            &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("frames"))]),
        ),
        ApiKey::AddPartitionsToTxn => frame(
            api,
            version,
            id,
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(txn_id())
                .with_v3_and_below_producer_id(ProducerId(txn_producer().0))
                .with_v3_and_below_producer_epoch(txn_producer().1)
                .with_v3_and_below_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(t())
                        .with_partitions(vec![0]),
                ]),
        ),
        ApiKey::AddOffsetsToTxn => frame(
            api,
            version,
            id,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(txn_id())
                .with_producer_id(ProducerId(txn_producer().0))
                .with_producer_epoch(txn_producer().1)
                .with_group_id(GroupId(s("g"))),
        ),
        ApiKey::TxnOffsetCommit => frame(
            api,
            version,
            id,
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(txn_id())
                .with_group_id(GroupId(s("g")))
                .with_producer_id(ProducerId(txn_producer().0))
                .with_producer_epoch(txn_producer().1)
                .with_generation_id(-1)
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(t())
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                .with_committed_offset(1),
                        ]),
                ]),
        ),
        // v0 commits the transaction; v1-v4 are retries of that commit,
        // answered; v5 (KIP-890) then moves the producer to its next epoch.
        ApiKey::EndTxn => frame(
            api,
            version,
            id,
            &EndTxnRequest::default()
                .with_transactional_id(txn_id())
                .with_producer_id(ProducerId(txn_producer().0))
                .with_producer_epoch(txn_producer().1)
                .with_committed(true),
        ),
        ApiKey::ListTransactions => frame(
            api,
            version,
            id,
            &ListTransactionsRequest::default().with_duration_filter(-1),
        ),
        ApiKey::DescribeTransactions => frame(
            api,
            version,
            id,
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![txn_id()]),
        ),
        ApiKey::DescribeProducers => frame(
            api,
            version,
            id,
            &DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(t())
                    .with_partition_indexes(vec![0]),
            ]),
        ),
        ApiKey::DescribeAcls => frame(
            api,
            version,
            id,
            &DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_resource_name_filter(None)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1),
        ),
        ApiKey::CreateAcls => frame(
            api,
            version,
            id,
            &CreateAclsRequest::default().with_creations(vec![
                create_acls_request::AclCreation::default()
                    .with_resource_type(2)
                    .with_resource_name(s(&format!("acl{version}")))
                    .with_resource_pattern_type(3)
                    .with_principal(s("User:every-version"))
                    .with_host(s("*"))
                    .with_operation(3)
                    .with_permission_type(3),
            ]),
        ),
        ApiKey::DeleteAcls => frame(
            api,
            version,
            id,
            &DeleteAclsRequest::default().with_filters(vec![
                delete_acls_request::DeleteAclsFilter::default()
                    .with_resource_type_filter(2)
                    .with_resource_name_filter(Some(s(&format!("acl{version}"))))
                    .with_principal_filter(None)
                    .with_host_filter(None)
                    .with_pattern_type_filter(1)
                    .with_operation(1)
                    .with_permission_type(1),
            ]),
        ),
        ApiKey::DescribeUserScramCredentials => frame(
            api,
            version,
            id,
            &DescribeUserScramCredentialsRequest::default().with_users(None),
        ),
        ApiKey::AlterUserScramCredentials => frame(
            api,
            version,
            id,
            &AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(s("every-version"))
                    .with_mechanism(1)
                    .with_iterations(4096)
                    .with_salt(Bytes::from_static(b"some salt"))
                    .with_salted_password(Bytes::from(vec![7u8; 32])),
            ]),
        ),
        _ => return None,
    })
}

/// The transactional id the transaction APIs of
/// `every_served_version_answers` use.
fn txn_id() -> kafka_protocol::messages::TransactionalId {
    kafka_protocol::messages::TransactionalId(StrBytes::from_static_str("every-version"))
}

/// The producer of [`txn_id`], once initialized.
static TXN_PRODUCER: std::sync::OnceLock<(i64, i16)> = std::sync::OnceLock::new();

fn txn_producer() -> (i64, i16) {
    *TXN_PRODUCER.get().unwrap_or(&(-1, -1))
}

/// The error codes of an answer, decoded at its version.
fn answer_codes(api: ApiKey, version: i16, bytes: Bytes) -> (i32, Vec<i16>) {
    use kafka_protocol::messages::*;
    macro_rules! codes {
        ($t:ty, |$r:ident| $e:expr) => {{
            let (id, $r): (i32, $t) = decode(api, version, bytes);
            (id, $e)
        }};
    }
    match api {
        ApiKey::Produce => codes!(ProduceResponse, |r| r
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
            .collect()),
        ApiKey::Fetch => codes!(FetchResponse, |r| r
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()),
        ApiKey::ListOffsets => codes!(ListOffsetsResponse, |r| r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()),
        ApiKey::Metadata => codes!(MetadataResponse, |r| r
            .topics
            .iter()
            .map(|t| t.error_code)
            .collect()),
        ApiKey::OffsetCommit => codes!(OffsetCommitResponse, |r| r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()),
        ApiKey::OffsetFetch => codes!(OffsetFetchResponse, |r| {
            let mut c: Vec<i16> = r.groups.iter().map(|g| g.error_code).collect();
            c.push(r.error_code);
            c
        }),
        ApiKey::FindCoordinator => codes!(FindCoordinatorResponse, |r| {
            let mut c: Vec<i16> = r.coordinators.iter().map(|c| c.error_code).collect();
            c.push(r.error_code);
            c
        }),
        ApiKey::ApiVersions => codes!(ApiVersionsResponse, |r| vec![r.error_code]),
        ApiKey::CreateTopics => codes!(CreateTopicsResponse, |r| r
            .topics
            .iter()
            .map(|t| t.error_code)
            .collect()),
        ApiKey::DeleteTopics => codes!(DeleteTopicsResponse, |r| r
            .responses
            .iter()
            .map(|t| t.error_code)
            .collect()),
        ApiKey::InitProducerId => codes!(InitProducerIdResponse, |r| vec![r.error_code]),
        ApiKey::DeleteRecords => codes!(DeleteRecordsResponse, |r| r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| if p.low_watermark == 1 {
                p.error_code
            } else {
                -100
            })
            .collect()),
        ApiKey::OffsetForLeaderEpoch => codes!(OffsetForLeaderEpochResponse, |r| r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()),
        ApiKey::DescribeConfigs => codes!(DescribeConfigsResponse, |r| r
            .results
            .iter()
            .map(|x| x.error_code)
            .collect()),
        ApiKey::AlterConfigs => codes!(AlterConfigsResponse, |r| r
            .responses
            .iter()
            .map(|x| x.error_code)
            .collect()),
        ApiKey::CreatePartitions => codes!(CreatePartitionsResponse, |r| r
            .results
            .iter()
            .map(|x| x.error_code)
            .collect()),
        ApiKey::IncrementalAlterConfigs => codes!(IncrementalAlterConfigsResponse, |r| r
            .responses
            .iter()
            .map(|x| x.error_code)
            .collect()),
        ApiKey::DescribeCluster => codes!(DescribeClusterResponse, |r| vec![r.error_code]),
        ApiKey::JoinGroup => codes!(JoinGroupResponse, |r| vec![r.error_code]),
        ApiKey::SyncGroup => codes!(SyncGroupResponse, |r| {
            // The assignment the leader stored comes back.
            vec![r.error_code, if r.assignment == "a" { 0 } else { -100 }]
        }),
        ApiKey::Heartbeat => codes!(HeartbeatResponse, |r| vec![r.error_code]),
        ApiKey::LeaveGroup => codes!(LeaveGroupResponse, |r| {
            let mut c: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
            c.push(r.error_code);
            c
        }),
        ApiKey::ListGroups => codes!(ListGroupsResponse, |r| {
            let mut c = vec![r.error_code];
            if !r.groups.iter().any(|g| g.group_id.0.starts_with("jg")) {
                c.push(-100);
            }
            c
        }),
        ApiKey::DescribeGroups => codes!(DescribeGroupsResponse, |r| r
            .groups
            .iter()
            .map(|g| g.error_code)
            .collect()),
        ApiKey::DeleteGroups => codes!(DeleteGroupsResponse, |r| r
            .results
            .iter()
            .map(|g| g.error_code)
            .collect()),
        ApiKey::OffsetDelete => codes!(OffsetDeleteResponse, |r| {
            let mut c: Vec<i16> = r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect();
            c.push(r.error_code);
            c
        }),
        ApiKey::ConsumerGroupHeartbeat => {
            codes!(ConsumerGroupHeartbeatResponse, |r| vec![r.error_code])
        }
        ApiKey::ConsumerGroupDescribe => codes!(ConsumerGroupDescribeResponse, |r| r
            .groups
            .iter()
            .map(|g| g.error_code)
            .collect()),
        ApiKey::AddPartitionsToTxn => codes!(AddPartitionsToTxnResponse, |r| r
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| t
                .results_by_partition
                .iter()
                .map(|p| p.partition_error_code))
            .collect()),
        ApiKey::AddOffsetsToTxn => codes!(AddOffsetsToTxnResponse, |r| vec![r.error_code]),
        ApiKey::TxnOffsetCommit => codes!(TxnOffsetCommitResponse, |r| r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()),
        ApiKey::EndTxn => codes!(EndTxnResponse, |r| vec![r.error_code]),
        ApiKey::ListTransactions => codes!(ListTransactionsResponse, |r| {
            let mut c = vec![r.error_code];
            if r.transaction_states.is_empty() {
                c.push(-100);
            }
            c
        }),
        ApiKey::DescribeTransactions => codes!(DescribeTransactionsResponse, |r| r
            .transaction_states
            .iter()
            .map(|t| t.error_code)
            .collect()),
        ApiKey::DescribeProducers => codes!(DescribeProducersResponse, |r| r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()),
        ApiKey::DescribeAcls => codes!(DescribeAclsResponse, |r| vec![r.error_code]),
        ApiKey::CreateAcls => codes!(CreateAclsResponse, |r| r
            .results
            .iter()
            .map(|r| r.error_code)
            .collect()),
        ApiKey::DeleteAcls => codes!(DeleteAclsResponse, |r| r
            .filter_results
            .iter()
            .map(|r| r.error_code)
            .collect()),
        ApiKey::DescribeUserScramCredentials => {
            codes!(DescribeUserScramCredentialsResponse, |r| vec![r.error_code])
        }
        ApiKey::AlterUserScramCredentials => codes!(AlterUserScramCredentialsResponse, |r| r
            .results
            .iter()
            .map(|r| r.error_code)
            .collect()),
        other => panic!("no decoder for {other:?}"),
    }
}

/// Every version of every API ApiVersions lists is answered, without an
/// error, and the answer decodes at that version.
#[tokio::test]
async fn every_served_version_answers() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let addr = agent.kafka_addr().unwrap();
    let mut s = connect(addr).await;
    // Topic t with a record.
    let (_, r): (i32, MetadataResponse) = {
        s.write_all(&request_of(ApiKey::Metadata, 12).unwrap())
            .await
            .unwrap();
        decode(ApiKey::Metadata, 12, answer(&mut s).await.unwrap())
    };
    assert_eq!(r.topics[0].error_code, 0);
    // The transactional producer of the transaction APIs.
    let init = kafka_protocol::messages::InitProducerIdRequest::default()
        .with_transactional_id(Some(txn_id()))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(kafka_protocol::messages::ProducerId(-1))
        .with_producer_epoch(-1);
    s.write_all(&frame(ApiKey::InitProducerId, 4, 7, &init))
        .await
        .unwrap();
    let (_, r): (i32, kafka_protocol::messages::InitProducerIdResponse) =
        decode(ApiKey::InitProducerId, 4, answer(&mut s).await.unwrap());
    assert_eq!(r.error_code, 0);
    TXN_PRODUCER
        .set((r.producer_id.0, r.producer_epoch))
        .unwrap();
    s.write_all(&api_versions(3, 1)).await.unwrap();
    let (_, served): (i32, ApiVersionsResponse) =
        decode(ApiKey::ApiVersions, 3, answer(&mut s).await.unwrap());
    let mut answered = 0;
    for key in &served.api_keys {
        let api = ApiKey::try_from(key.api_key).unwrap();
        if matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
            // This agent does not authenticate; tests/kafka_security.rs
            // sends every version of both to one that does.
            continue;
        }
        for version in key.min_version..=key.max_version {
            let request =
                request_of(api, version).unwrap_or_else(|| panic!("no request for {api:?}"));
            s.write_all(&request).await.unwrap();
            let bytes = answer(&mut s)
                .await
                .unwrap_or_else(|| panic!("{api:?} v{version}: connection closed"));
            let (id, codes) = answer_codes(api, version, bytes);
            assert_eq!(id, 100 + i32::from(version), "{api:?} v{version}");
            assert!(
                codes.iter().all(|&c| c == 0),
                "{api:?} v{version}: {codes:?}"
            );
            answered += 1;
        }
    }
    assert!(answered > 100, "{answered}");
    agent.shutdown().await.unwrap();
}
