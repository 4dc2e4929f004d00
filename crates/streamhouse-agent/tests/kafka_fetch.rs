//! Produce and Fetch over the Kafka protocol with a raw client: stored
//! batches served byte for byte (base offsets patched), the whole batch
//! when the fetch offset falls inside it, long polls, byte limits, acks=0,
//! per-partition errors and OffsetForLeaderEpoch.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, ProduceResponse, RequestHeader,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use streamhouse_agent::{Agent, AgentConfig};
use streamhouse_core::{Compression, NewRecord, RecordBatch};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod common;
use common::kafka::*;

/// A batch of `n` records (`{tag}-{i}`, with a key and a header), base
/// offset 0 as producers send it.
fn batch(tag: &str, n: usize, compression: Compression) -> Bytes {
    RecordBatch::from_records((0..n).map(|i| {
        NewRecord::new(
            1_700_000_000_000 + i as i64,
            Some(Bytes::from(format!("key-{i}"))),
            format!("{tag}-{i}-{}", "v".repeat(40)),
        )
    }))
    .with_compression(compression)
    .encode()
    .unwrap()
}

/// `raw` with its base offset set to `base` (what the agent serves).
fn patched(raw: &Bytes, base: i64) -> Vec<u8> {
    let mut out = raw.to_vec();
    out[..8].copy_from_slice(&base.to_be_bytes());
    out
}

#[tokio::test]
async fn stored_batches_are_served_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let mut conn = Conn::open(&agent).await;
    create(&mut conn, "t").await;
    let first = batch("a", 5, Compression::Lz4);
    let second = batch("b", 3, Compression::Zstd);
    assert_eq!(produce(&mut conn, "t", 0, first.clone()).await, (0, 0));
    assert_eq!(produce(&mut conn, "t", 0, second.clone()).await, (0, 5));
    for version in [4, 7, 11, 12] {
        // From an offset inside the first batch: the whole of both batches.
        let r: FetchResponse = conn
            .call(
                ApiKey::Fetch,
                version,
                &fetch_request(vec![("t", 0, 2, 1 << 20)]),
            )
            .await;
        let p = &r.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 8), "v{version}");
        let mut expected = patched(&first, 0);
        expected.extend(patched(&second, 5));
        assert_eq!(p.records.as_deref(), Some(&expected[..]), "v{version}");
        assert_eq!(p.preferred_read_replica.0, -1);
        if version >= 7 {
            assert_eq!(r.session_id, 0);
        }
        // At the high watermark: nothing, no error.
        let r: FetchResponse = conn
            .call(
                ApiKey::Fetch,
                version,
                &fetch_request(vec![("t", 0, 8, 1 << 20)]),
            )
            .await;
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.records.as_deref().map(<[u8]>::len).unwrap_or(0), 0);
    }
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn fetch_limits_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let mut conn = Conn::open(&agent).await;
    create(&mut conn, "t").await;
    let mut sent = Vec::new();
    for partition in 0..3 {
        let mut batches = Vec::new();
        for i in 0..2 {
            let b = batch(&format!("p{partition}b{i}"), 10, Compression::None);
            produce(&mut conn, "t", partition, b.clone()).await;
            batches.push(b);
        }
        sent.push(batches);
    }
    // A partition limit of 1 byte still returns the first batch, whole.
    let r: FetchResponse = conn
        .call(
            ApiKey::Fetch,
            12,
            &fetch_request((0..3).map(|p| ("t", p, 0, 1)).collect()),
        )
        .await;
    for (p, data) in r.responses[0].partitions.iter().enumerate() {
        assert_eq!(data.records.as_deref(), Some(&patched(&sent[p][0], 0)[..]));
    }
    // A response limit of 1 byte: only the first partition has records, the
    // others still report their offsets.
    let mut request = fetch_request((0..3).map(|p| ("t", p, 0, 1 << 20)).collect());
    request.max_bytes = 1;
    let r: FetchResponse = conn.call(ApiKey::Fetch, 12, &request).await;
    let parts = &r.responses[0].partitions;
    assert_eq!(
        parts[0].records.as_deref(),
        Some(&patched(&sent[0][0], 0)[..])
    );
    for p in &parts[1..] {
        assert_eq!(p.records.as_deref().map(<[u8]>::len), Some(0));
        assert_eq!(
            (p.error_code, p.high_watermark, p.log_start_offset),
            (0, 20, 0)
        );
    }
    // Errors per partition: unknown topic, unknown partition, out of range.
    let r: FetchResponse = conn
        .call(
            ApiKey::Fetch,
            12,
            &fetch_request(vec![
                ("t", 0, 21, 1000),
                ("t", 7, 0, 1000),
                ("nope", 0, 0, 1000),
            ]),
        )
        .await;
    let codes: Vec<i16> = r
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect();
    assert_eq!(codes, [1, 3, 3]);
    // Produce errors: unknown partition, bytes that are no batch.
    let (code, _) = produce(&mut conn, "t", 9, batch("x", 1, Compression::None)).await;
    assert_eq!(code, 3);
    let (code, _) = produce(&mut conn, "t", 0, Bytes::from_static(&[1; 70])).await;
    assert_eq!(code, 87, "INVALID_RECORD");
    // OffsetForLeaderEpoch: epoch 0 ends at the high watermark.
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(topic("t"))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(1)
                        .with_current_leader_epoch(0)
                        .with_leader_epoch(0),
                ]),
        ]);
    let r: OffsetForLeaderEpochResponse =
        conn.call(ApiKey::OffsetForLeaderEpoch, 4, &request).await;
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.leader_epoch, p.end_offset), (0, 0, 20));
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn fetch_waits_for_records_and_acks_zero_is_not_answered() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let mut conn = Conn::open(&agent).await;
    create(&mut conn, "t").await;
    // Nothing arrives: the fetch answers empty after max_wait.
    let mut request = fetch_request(vec![("t", 0, 0, 1 << 20)]);
    request.max_wait_ms = 300;
    request.min_bytes = 1;
    let started = Instant::now();
    let r: FetchResponse = conn.call(ApiKey::Fetch, 12, &request).await;
    assert!(started.elapsed() >= Duration::from_millis(280));
    assert_eq!(
        r.responses[0].partitions[0]
            .records
            .as_deref()
            .map(<[u8]>::len),
        Some(0)
    );
    // A record arrives (acks=0, no answer) while the fetch waits: it is
    // answered at once.
    request.max_wait_ms = 10_000;
    let fetch_id = conn.send(ApiKey::Fetch, 12, &request).await;
    let mut writer = Conn::open(&agent).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let records = batch("late", 2, Compression::Gzip);
    writer
        .send(
            ApiKey::Produce,
            9,
            &produce_request(0, vec![("t", 0, records.clone())]),
        )
        .await;
    // The next answer on the writer's connection is its ApiVersions: the
    // acks=0 produce got none.
    let versions_id = writer
        .send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    let (got, _): (i32, ApiVersionsResponse) = writer.receive(ApiKey::ApiVersions, 3).await;
    assert_eq!(got, versions_id);
    let (got, r): (i32, FetchResponse) = conn.receive(ApiKey::Fetch, 12).await;
    assert_eq!(got, fetch_id);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        r.responses[0].partitions[0].records.as_deref(),
        Some(&patched(&records, 0)[..])
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn clients_are_sent_to_agents_of_their_zone() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = streamhouse_metadata::open_without_fsync(&format!(
        "sqlite://{}",
        dir.path().join("metadata.db").display()
    ))
    .await
    .unwrap();
    let store = streamhouse_storage::open_object_store(
        &format!("file://{}", dir.path().join("objects").display()),
        &Default::default(),
    )
    .unwrap();
    let start = |id: &str, zone: &str| {
        let mut config = AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            agent_id: Some(id.into()),
            zone: Some(zone.into()),
            kafka_listen: Some("127.0.0.1:0".parse().unwrap()),
            kafka_default_partitions: 3,
            ..AgentConfig::default()
        };
        config.pipeline.linger = Duration::from_millis(2);
        Agent::start_with(config, metadata.clone(), store.clone())
    };
    let a = start("a", "az1").await.unwrap();
    let b = start("b", "az2").await.unwrap();
    let node = |id: &str| {
        let metadata = metadata.clone();
        let id = id.to_string();
        async move {
            metadata
                .list_agents(None)
                .await
                .unwrap()
                .into_iter()
                .find(|a| a.agent_id == id)
                .unwrap()
                .node_id
        }
    };
    let (node_a, node_b) = (node("a").await, node("b").await);
    let mut conn = Conn::open(&a).await;
    create(&mut conn, "t").await;
    let records = batch("z", 3, Compression::None);
    produce(&mut conn, "t", 0, records.clone()).await;

    // Metadata: a client naming zone az2 in its client id gets leaders in
    // az2 only; without a zone, leaders are spread over both.
    let leaders = |client_id: Option<&'static str>| {
        let request = kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(topic("t"))),
        ]));
        let addr = a.kafka_addr().unwrap();
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let header = RequestHeader::default()
                .with_request_api_key(ApiKey::Metadata as i16)
                .with_request_api_version(12)
                .with_correlation_id(1)
                .with_client_id(client_id.map(StrBytes::from_static_str));
            let mut payload = BytesMut::new();
            header.encode(&mut payload, 2).unwrap();
            request.encode(&mut payload, 12).unwrap();
            s.write_i32(payload.len() as i32).await.unwrap();
            s.write_all(&payload).await.unwrap();
            let mut c = Conn {
                stream: s,
                next_id: 2,
            };
            let (_, r): (i32, kafka_protocol::messages::MetadataResponse) =
                c.receive(ApiKey::Metadata, 12).await;
            r.topics[0]
                .partitions
                .iter()
                .map(|p| p.leader_id.0)
                .collect::<Vec<i32>>()
        }
    };
    assert_eq!(leaders(Some("billing,zone=az2")).await, [node_b; 3]);
    assert_eq!(leaders(Some("zone=az1")).await, [node_a; 3]);
    let spread = leaders(Some("billing")).await;
    assert!(
        spread.contains(&node_a) && spread.contains(&node_b),
        "{spread:?}"
    );

    // Fetch v11+: a client of az2 asking agent a is sent to agent b, with
    // the partition's offsets and no records; a client of az1 is served.
    let mut request = fetch_request(vec![("t", 0, 0, 1 << 20)]);
    request.rack_id = StrBytes::from_static_str("az2");
    let r: FetchResponse = conn.call(ApiKey::Fetch, 11, &request).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.preferred_read_replica.0, node_b);
    assert_eq!((p.error_code, p.high_watermark), (0, 3));
    assert_eq!(p.records.as_deref().map(<[u8]>::len), Some(0));
    request.rack_id = StrBytes::from_static_str("az1");
    let r: FetchResponse = conn.call(ApiKey::Fetch, 11, &request).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.preferred_read_replica.0, -1);
    assert_eq!(p.records.as_deref(), Some(&patched(&records, 0)[..]));
    // Agent b serves its own zone's client.
    let mut at_b = Conn::open(&b).await;
    request.rack_id = StrBytes::from_static_str("az2");
    let r: FetchResponse = at_b.call(ApiKey::Fetch, 11, &request).await;
    assert_eq!(
        r.responses[0].partitions[0].records.as_deref(),
        Some(&patched(&records, 0)[..])
    );
    // A zone without agents: served where asked.
    request.rack_id = StrBytes::from_static_str("az9");
    let r: FetchResponse = conn.call(ApiKey::Fetch, 11, &request).await;
    assert_eq!(r.responses[0].partitions[0].preferred_read_replica.0, -1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn produce_waits_at_most_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metadata_url: format!("sqlite://{}", dir.path().join("metadata.db").display()),
        storage_url: format!("file://{}", dir.path().join("objects").display()),
        kafka_listen: Some("127.0.0.1:0".parse().unwrap()),
        kafka_default_partitions: 3,
        unsafe_no_fsync: true,
        ..AgentConfig::default()
    };
    // Batches wait a second for their flush.
    config.pipeline.linger = Duration::from_secs(1);
    let agent = Agent::start(config).await.unwrap();
    let mut conn = Conn::open(&agent).await;
    create(&mut conn, "t").await;
    let request = produce_request(-1, vec![("t", 0, batch("slow", 2, Compression::None))])
        .with_timeout_ms(100);
    let started = Instant::now();
    let r: ProduceResponse = conn.call(ApiKey::Produce, 9, &request).await;
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 7,
        "REQUEST_TIMED_OUT"
    );
    // The batch still commits.
    let mut fetch = fetch_request(vec![("t", 0, 0, 1 << 20)]);
    fetch.max_wait_ms = 5000;
    fetch.min_bytes = 1;
    let r: FetchResponse = conn.call(ApiKey::Fetch, 12, &fetch).await;
    assert_eq!(r.responses[0].partitions[0].high_watermark, 2);
    agent.shutdown().await.unwrap();
}
