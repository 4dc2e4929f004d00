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
/// Kafka listener on a free port, auto-creating topics of 3 partitions;
/// a classic group's first join is answered once its members joined,
/// without the initial rebalance delay.
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
        kafka_group_initial_rebalance_delay: Duration::ZERO,
        ..AgentConfig::default()
    };
    config.pipeline.linger = Duration::from_millis(2);
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

/// A user of a [`secure_agent`]: name and password.
pub type User = (&'static str, &'static str);

/// An agent that requires authentication and enforces ACLs (passwords
/// accepted without TLS, so tests can use SASL PLAIN and gRPC Basic
/// credentials), with `User:admin` a super user and `users` (SCRAM-SHA-256
/// and -512 credentials) and `acls` written straight into its metadata
/// store before it starts.
pub async fn secure_agent(
    dir: &tempfile::TempDir,
    users: &[User],
    acls: &[streamhouse_metadata::AclBinding],
    configure: impl FnOnce(&mut AgentConfig),
) -> RunningAgent {
    let url = format!("sqlite://{}", dir.path().join("metadata.db").display());
    let store = streamhouse_metadata::open_without_fsync(&url)
        .await
        .unwrap();
    for (user, password) in users {
        for m in streamhouse_core::scram::Mechanism::ALL {
            let credential = streamhouse_core::scram::Credential::new(
                m,
                password,
                streamhouse_core::scram::MIN_ITERATIONS,
            )
            .unwrap();
            store
                .upsert_scram_credential(user, &credential)
                .await
                .unwrap();
        }
    }
    if !acls.is_empty() {
        store.create_acls(acls).await.unwrap();
    }
    drop(store);
    agent_with(dir, |c| {
        c.auth.required = true;
        c.auth.allow_plaintext_passwords = true;
        c.auth.super_users = vec!["User:admin".to_string()];
        configure(c);
    })
    .await
}

/// An ACL binding: ALLOW or DENY `operation` on a resource to `principal`
/// from any host.
pub fn acl(
    principal: &str,
    resource_type: streamhouse_metadata::ResourceType,
    name: &str,
    pattern_type: streamhouse_metadata::PatternType,
    operation: streamhouse_metadata::AclOperation,
    permission: streamhouse_metadata::AclPermission,
) -> streamhouse_metadata::AclBinding {
    streamhouse_metadata::AclBinding {
        resource_type,
        resource_name: name.to_string(),
        pattern_type,
        principal: principal.to_string(),
        host: "*".to_string(),
        operation,
        permission,
    }
}

/// What a failed SASL step answered: its code and message.
pub type SaslFailure = (i16, String);

impl Conn {
    /// SaslHandshake v1 for `mechanism`: the code and the mechanisms
    /// offered.
    pub async fn handshake(&mut self, mechanism: &str) -> (i16, Vec<String>) {
        let r: kafka_protocol::messages::SaslHandshakeResponse = self
            .call(
                ApiKey::SaslHandshake,
                1,
                &kafka_protocol::messages::SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_string(mechanism.to_string())),
            )
            .await;
        (
            r.error_code,
            r.mechanisms.iter().map(|m| m.to_string()).collect(),
        )
    }

    /// One SaslAuthenticate v2 step: the server's bytes, or its failure.
    pub async fn authenticate(&mut self, bytes: Vec<u8>) -> Result<Bytes, SaslFailure> {
        self.authenticate_at(2, bytes).await
    }

    /// One SaslAuthenticate step at `version`.
    pub async fn authenticate_at(
        &mut self,
        version: i16,
        bytes: Vec<u8>,
    ) -> Result<Bytes, SaslFailure> {
        let r: kafka_protocol::messages::SaslAuthenticateResponse = self
            .call(
                ApiKey::SaslAuthenticate,
                version,
                &kafka_protocol::messages::SaslAuthenticateRequest::default()
                    .with_auth_bytes(Bytes::from(bytes)),
            )
            .await;
        if r.error_code == 0 {
            Ok(r.auth_bytes)
        } else {
            Err((
                r.error_code,
                r.error_message.map(|m| m.to_string()).unwrap_or_default(),
            ))
        }
    }

    /// Authenticates with SASL PLAIN.
    pub async fn login_plain(&mut self, user: &str, password: &str) -> Result<(), SaslFailure> {
        let (code, _) = self.handshake("PLAIN").await;
        assert_eq!(code, 0, "PLAIN refused by the handshake");
        self.authenticate(format!("\0{user}\0{password}").into_bytes())
            .await
            .map(|_| ())
    }

    /// Authenticates with SCRAM (`mechanism` SCRAM-SHA-256 or -512),
    /// checking the server's signature.
    pub async fn login_scram(
        &mut self,
        mechanism: streamhouse_core::scram::Mechanism,
        user: &str,
        password: &str,
    ) -> Result<(), SaslFailure> {
        self.login_scram_at(2, mechanism, user, password).await
    }

    /// [`Conn::login_scram`] with SaslAuthenticate at `version`.
    pub async fn login_scram_at(
        &mut self,
        version: i16,
        mechanism: streamhouse_core::scram::Mechanism,
        user: &str,
        password: &str,
    ) -> Result<(), SaslFailure> {
        let (code, _) = self.handshake(mechanism.name()).await;
        assert_eq!(code, 0, "{} refused by the handshake", mechanism.name());
        let mut client = streamhouse_core::scram::Client::new(mechanism, user, password);
        let server_first = self.authenticate_at(version, client.client_first()).await?;
        let client_final = client.client_final(&server_first).unwrap();
        let server_final = self.authenticate_at(version, client_final).await?;
        client.verify_server_final(&server_final).unwrap();
        Ok(())
    }

    /// Whether the agent closed the connection (reading hits its end).
    pub async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// A connection to `agent` authenticated with SASL PLAIN as `user`.
pub async fn login(agent: &RunningAgent, (user, password): User) -> Conn {
    let mut conn = Conn::open(agent).await;
    conn.login_plain(user, password).await.unwrap();
    conn
}
