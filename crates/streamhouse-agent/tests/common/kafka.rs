//! A raw Kafka client for the agent's Kafka listener tests: an agent on
//! SQLite and a local directory, one connection sending one request at a
//! time, and the requests most tests need.
#![allow(dead_code)]

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use streamhouse_agent::{Agent, AgentConfig, RunningAgent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An agent on SQLite and a local directory in `dir` (no fsync), its
/// Kafka listener on a free port, auto-creating topics of 3 partitions.
pub async fn agent(dir: &tempfile::TempDir) -> RunningAgent {
    agent_with(dir, |_| {}).await
}

/// [`agent`], with its configuration changed by `configure` first.
pub async fn agent_with(
    dir: &tempfile::TempDir,
    configure: impl FnOnce(&mut AgentConfig),
) -> RunningAgent {
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metadata_url: format!("sqlite://{}", dir.path().join("metadata.db").display()),
        storage_url: format!("file://{}", dir.path().join("objects").display()),
        kafka_listen: Some("127.0.0.1:0".parse().unwrap()),
        kafka_default_partitions: 3,
        unsafe_no_fsync: true,
        ..AgentConfig::default()
    };
    config.pipeline.flush_interval = Duration::from_millis(2);
    configure(&mut config);
    Agent::start(config).await.unwrap()
}

/// A connection speaking the Kafka protocol, one request at a time.
pub struct Conn {
    pub stream: TcpStream,
    pub next_id: i32,
}

impl Conn {
    pub async fn open(agent: &RunningAgent) -> Conn {
        Conn {
            stream: TcpStream::connect(agent.kafka_addr().unwrap())
                .await
                .unwrap(),
            next_id: 1,
        }
    }

    pub async fn send<T: Encodable>(&mut self, api: ApiKey, version: i16, body: &T) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("fetch-test")));
        let mut payload = BytesMut::new();
        header
            .encode(&mut payload, api.request_header_version(version))
            .unwrap();
        body.encode(&mut payload, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(payload.len() as i32);
        frame.extend_from_slice(&payload);
        self.stream.write_all(&frame).await.unwrap();
        id
    }

    pub async fn receive<T: Decodable>(&mut self, api: ApiKey, version: i16) -> (i32, T) {
        let size = self.stream.read_i32().await.unwrap();
        let mut buf = vec![0; size as usize];
        self.stream.read_exact(&mut buf).await.unwrap();
        let mut bytes = Bytes::from(buf);
        let header =
            ResponseHeader::decode(&mut bytes, api.response_header_version(version)).unwrap();
        (
            header.correlation_id,
            T::decode(&mut bytes, version).unwrap(),
        )
    }

    pub async fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &Q,
    ) -> R {
        let id = self.send(api, version, body).await;
        let (got, response) = self.receive(api, version).await;
        assert_eq!(got, id);
        response
    }
}

pub fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

pub fn produce_request(acks: i16, parts: Vec<(&'static str, i32, Bytes)>) -> ProduceRequest {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for (name, index, records) in parts {
        let data = PartitionProduceData::default()
            .with_index(index)
            .with_records(Some(records));
        match topics.iter_mut().find(|t| t.name == topic(name)) {
            Some(t) => t.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(topic(name))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(topics)
}

/// Produces `records` to `name`/`index` (acks=all); the partition's code
/// and base offset.
pub async fn produce(
    conn: &mut Conn,
    name: &'static str,
    index: i32,
    records: Bytes,
) -> (i16, i64) {
    let r: ProduceResponse = conn
        .call(
            ApiKey::Produce,
            9,
            &produce_request(-1, vec![(name, index, records)]),
        )
        .await;
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

pub fn fetch_request(parts: Vec<(&'static str, i32, i64, i32)>) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (name, partition, offset, max) in parts {
        let p = FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(max);
        match topics.iter_mut().find(|t| t.topic == topic(name)) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(topic(name))
                    .with_partitions(vec![p]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_topics(topics)
}

/// Makes `name` exist with 3 partitions (auto-created by Metadata).
pub async fn create(conn: &mut Conn, name: &'static str) {
    let request = kafka_protocol::messages::MetadataRequest::default()
        .with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(topic(name))),
        ]))
        .with_allow_auto_topic_creation(true);
    let r: kafka_protocol::messages::MetadataResponse =
        conn.call(ApiKey::Metadata, 12, &request).await;
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(r.topics[0].partitions.len(), 3);
}
