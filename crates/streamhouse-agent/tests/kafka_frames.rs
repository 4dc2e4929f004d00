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
use streamhouse_agent::{Agent, AgentConfig, RunningAgent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UNSUPPORTED_VERSION: i16 = 35;

async fn agent(dir: &tempfile::TempDir) -> RunningAgent {
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metadata_url: format!("sqlite://{}", dir.path().join("metadata.db").display()),
        storage_url: format!("file://{}", dir.path().join("objects").display()),
        kafka_listen: Some("127.0.0.1:0".parse().unwrap()),
        unsafe_no_fsync: true,
        ..AgentConfig::default()
    };
    config.limits.max_request_bytes = 1 << 20;
    Agent::start(config).await.unwrap()
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
        &frame_with_body(ApiKey::JoinGroup as i16, 5, 1, b""),
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
            (ApiKey::OffsetForLeaderEpoch, 2..=4),
            (ApiKey::DescribeConfigs, 1..=4),
            (ApiKey::AlterConfigs, 0..=2),
            (ApiKey::CreatePartitions, 0..=3),
            (ApiKey::IncrementalAlterConfigs, 0..=1),
            (ApiKey::DescribeCluster, 0..=2),
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
            (19, 2, 7), // CreateTopics
            (20, 1, 6), // DeleteTopics
            (22, 0, 4), // InitProducerId
            (23, 2, 4), // OffsetForLeaderEpoch
            (32, 1, 4), // DescribeConfigs
            (33, 0, 2), // AlterConfigs
            (37, 0, 3), // CreatePartitions
            (44, 0, 1), // IncrementalAlterConfigs
            (60, 0, 2), // DescribeCluster
        ]
    );

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
