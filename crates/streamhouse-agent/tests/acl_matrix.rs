//! ACLs enforced alike on both listeners: one table of (principal,
//! listener, operation, resource, expected result), run in order against
//! one agent that requires authentication.
//!
//! - `User:writer`: ALLOW WRITE on topics prefixed `orders-`, nothing else.
//! - `User:reader`: READ on group `billing` and on topic `orders-eu`.
//! - `User:denied`: ALLOW ALL on every topic, DENY ALL on `orders-eu`.
//! - `User:admin`: a super user.

use std::time::Duration;

use base64::Engine;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use streamhouse_agent::RunningAgent;
use streamhouse_core::{NewRecord, RecordBatch};
use streamhouse_metadata::ResourceType as Res;
use streamhouse_metadata::{AclOperation as Op, AclPermission as Perm, PatternType as Pat};
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;
use streamhouse_proto::stream_house_client::StreamHouseClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

mod common;
use common::kafka::{Conn, User, acl, login, secure_agent, topic};

const WRITER: User = ("writer", "writer-pw");
const READER: User = ("reader", "reader-pw");
const DENIED: User = ("denied", "denied-pw");
const ADMIN: User = ("admin", "admin-pw");

const TOPIC_DENIED: i16 = 29;
const GROUP_DENIED: i16 = 30;
const CLUSTER_DENIED: i16 = 31;
const TXN_DENIED: i16 = 53;
const MEMBER_ID_REQUIRED: i16 = 79;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    Kafka,
    Grpc,
}

#[derive(Clone, Copy, Debug)]
enum Operation {
    Produce,
    Fetch,
    /// Every topic the principal may see.
    MetadataListing,
    CreateTopic,
    DeleteTopic,
    CommitOffset,
    /// JoinGroup on Kafka, GroupHeartbeat on gRPC.
    JoinGroup,
    InitTransactionalProducer,
    InitIdempotentProducer,
    DescribeGroup,
    ListGroups,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expected {
    /// The Kafka error code (0: success).
    Code(i16),
    /// gRPC: answered without error.
    Ok,
    /// gRPC: PermissionDenied with AUTHORIZATION_FAILED (for produce and
    /// fetch: the partition's error code).
    Refused,
    /// The names listed (topics or groups), sorted.
    Listed(Vec<&'static str>),
}

use Expected::*;
use Listener::*;
use Operation::*;

fn acls() -> Vec<streamhouse_metadata::AclBinding> {
    vec![
        acl(
            "User:writer",
            Res::Topic,
            "orders-",
            Pat::Prefixed,
            Op::Write,
            Perm::Allow,
        ),
        acl(
            "User:reader",
            Res::Group,
            "billing",
            Pat::Literal,
            Op::Read,
            Perm::Allow,
        ),
        acl(
            "User:reader",
            Res::Topic,
            "orders-eu",
            Pat::Literal,
            Op::Read,
            Perm::Allow,
        ),
        acl(
            "User:denied",
            Res::Topic,
            "*",
            Pat::Literal,
            Op::All,
            Perm::Allow,
        ),
        acl(
            "User:denied",
            Res::Topic,
            "orders-eu",
            Pat::Literal,
            Op::All,
            Perm::Deny,
        ),
    ]
}

/// The rows, run in order (later rows see what earlier ones created).
fn table() -> Vec<(User, Listener, Operation, &'static str, Expected)> {
    let mut rows = Vec::new();
    for listener in [Kafka, Grpc] {
        let k = |code: i16, grpc: Expected| if listener == Kafka { Code(code) } else { grpc };
        // Created per listener so that each deletes its own.
        let (created_by_denied, created_by_admin) = match listener {
            Kafka => ("kafka-by-denied", "kafka-by-admin"),
            Grpc => ("grpc-by-denied", "grpc-by-admin"),
        };
        let txn = match listener {
            Kafka => "tx-kafka",
            Grpc => "tx-grpc",
        };
        rows.extend([
            (WRITER, listener, Produce, "orders-eu", k(0, Ok)),
            (
                READER,
                listener,
                Produce,
                "orders-eu",
                k(TOPIC_DENIED, Refused),
            ),
            (
                DENIED,
                listener,
                Produce,
                "orders-eu",
                k(TOPIC_DENIED, Refused),
            ),
            (DENIED, listener, Produce, "payments", k(0, Ok)),
            (ADMIN, listener, Produce, "orders-eu", k(0, Ok)),
            (
                WRITER,
                listener,
                Fetch,
                "orders-eu",
                k(TOPIC_DENIED, Refused),
            ),
            (READER, listener, Fetch, "orders-eu", k(0, Ok)),
            (
                DENIED,
                listener,
                Fetch,
                "orders-eu",
                k(TOPIC_DENIED, Refused),
            ),
            (DENIED, listener, Fetch, "payments", k(0, Ok)),
            (ADMIN, listener, Fetch, "payments", k(0, Ok)),
            (
                WRITER,
                listener,
                MetadataListing,
                "*",
                Listed(vec!["orders-eu"]),
            ),
            (
                READER,
                listener,
                MetadataListing,
                "*",
                Listed(vec!["orders-eu"]),
            ),
            (
                DENIED,
                listener,
                MetadataListing,
                "*",
                Listed(vec!["payments"]),
            ),
            (
                ADMIN,
                listener,
                MetadataListing,
                "*",
                Listed(vec!["orders-eu", "payments"]),
            ),
            (
                WRITER,
                listener,
                CreateTopic,
                "orders-new",
                k(TOPIC_DENIED, Refused),
            ),
            (
                READER,
                listener,
                CreateTopic,
                "orders-new",
                k(TOPIC_DENIED, Refused),
            ),
            (
                DENIED,
                listener,
                CreateTopic,
                "orders-eu",
                k(TOPIC_DENIED, Refused),
            ),
            (DENIED, listener, CreateTopic, created_by_denied, k(0, Ok)),
            (ADMIN, listener, CreateTopic, created_by_admin, k(0, Ok)),
            (
                WRITER,
                listener,
                DeleteTopic,
                "orders-eu",
                k(TOPIC_DENIED, Refused),
            ),
            (
                READER,
                listener,
                DeleteTopic,
                "orders-eu",
                k(TOPIC_DENIED, Refused),
            ),
            (
                DENIED,
                listener,
                DeleteTopic,
                "orders-eu",
                k(TOPIC_DENIED, Refused),
            ),
            (DENIED, listener, DeleteTopic, created_by_denied, k(0, Ok)),
            (ADMIN, listener, DeleteTopic, created_by_admin, k(0, Ok)),
            (
                WRITER,
                listener,
                CommitOffset,
                "billing",
                k(GROUP_DENIED, Refused),
            ),
            (READER, listener, CommitOffset, "billing", k(0, Ok)),
            (
                DENIED,
                listener,
                CommitOffset,
                "billing",
                k(GROUP_DENIED, Refused),
            ),
            (ADMIN, listener, CommitOffset, "billing", k(0, Ok)),
            (
                WRITER,
                listener,
                JoinGroup,
                "billing",
                k(GROUP_DENIED, Refused),
            ),
            (
                READER,
                listener,
                JoinGroup,
                "billing",
                k(MEMBER_ID_REQUIRED, Ok),
            ),
            (
                DENIED,
                listener,
                JoinGroup,
                "billing",
                k(GROUP_DENIED, Refused),
            ),
            (
                ADMIN,
                listener,
                JoinGroup,
                "other",
                k(MEMBER_ID_REQUIRED, Ok),
            ),
            (
                WRITER,
                listener,
                InitTransactionalProducer,
                txn,
                k(TXN_DENIED, Refused),
            ),
            (
                READER,
                listener,
                InitTransactionalProducer,
                txn,
                k(TXN_DENIED, Refused),
            ),
            (
                DENIED,
                listener,
                InitTransactionalProducer,
                txn,
                k(TXN_DENIED, Refused),
            ),
            (ADMIN, listener, InitTransactionalProducer, txn, k(0, Ok)),
            (WRITER, listener, InitIdempotentProducer, "-", k(0, Ok)),
            (
                READER,
                listener,
                InitIdempotentProducer,
                "-",
                k(CLUSTER_DENIED, Refused),
            ),
            (
                WRITER,
                listener,
                DescribeGroup,
                "billing",
                k(GROUP_DENIED, Refused),
            ),
            (READER, listener, DescribeGroup, "billing", k(0, Ok)),
            (
                DENIED,
                listener,
                DescribeGroup,
                "billing",
                k(GROUP_DENIED, Refused),
            ),
            (ADMIN, listener, DescribeGroup, "billing", k(0, Ok)),
            (WRITER, listener, ListGroups, "*", Listed(vec![])),
            (READER, listener, ListGroups, "*", Listed(vec!["billing"])),
            (DENIED, listener, ListGroups, "*", Listed(vec![])),
        ]);
    }
    rows
}

#[tokio::test]
async fn acls_are_enforced_alike_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let agent = secure_agent(&dir, &[WRITER, READER, DENIED, ADMIN], &acls(), |_| {}).await;
    let mut admin = login(&agent, ADMIN).await;
    for name in ["orders-eu", "payments"] {
        let r: CreateTopicsResponse = admin
            .call(ApiKey::CreateTopics, 7, &create_topics(name))
            .await;
        assert_eq!(r.topics[0].error_code, 0, "{name}");
    }
    for (user, listener, operation, resource, expected) in table() {
        let got = match listener {
            Kafka => {
                let mut conn = login(&agent, user).await;
                kafka(&mut conn, operation, resource).await
            }
            Grpc => grpc(&mut client(&agent, user).await, operation, resource).await,
        };
        assert_eq!(
            got, expected,
            "User:{} {listener:?} {operation:?} {resource}",
            user.0
        );
    }
    agent.shutdown().await.unwrap();
}

fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn batch() -> bytes::Bytes {
    RecordBatch::from_records([NewRecord::new(1, None, "v")])
        .encode()
        .unwrap()
}

fn create_topics(name: &str) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s(name)))
                .with_num_partitions(1)
                .with_replication_factor(-1),
        ])
        .with_timeout_ms(10_000)
}

fn static_name(name: &str) -> &'static str {
    Box::leak(name.to_string().into_boxed_str())
}

async fn kafka(conn: &mut Conn, operation: Operation, resource: &str) -> Expected {
    match operation {
        Produce => {
            let request =
                common::kafka::produce_request(-1, vec![(static_name(resource), 0, batch())]);
            let r: ProduceResponse = conn.call(ApiKey::Produce, 9, &request).await;
            Code(r.responses[0].partition_responses[0].error_code)
        }
        Fetch => {
            let request =
                common::kafka::fetch_request(vec![(static_name(resource), 0, 0, 1 << 16)]);
            let r: FetchResponse = conn.call(ApiKey::Fetch, 12, &request).await;
            Code(r.responses[0].partitions[0].error_code)
        }
        MetadataListing => {
            let r: MetadataResponse = conn
                .call(
                    ApiKey::Metadata,
                    12,
                    &MetadataRequest::default().with_topics(None),
                )
                .await;
            let mut names: Vec<&'static str> = r
                .topics
                .iter()
                .map(|t| static_name(t.name.as_ref().unwrap()))
                .filter(|n| !n.starts_with("kafka-by") && !n.starts_with("grpc-by"))
                .collect();
            names.sort();
            Listed(names)
        }
        CreateTopic => {
            let r: CreateTopicsResponse = conn
                .call(ApiKey::CreateTopics, 7, &create_topics(resource))
                .await;
            // An existing topic the principal may create is TOPIC_ALREADY_EXISTS.
            Code(r.topics[0].error_code)
        }
        DeleteTopic => {
            let r: DeleteTopicsResponse = conn
                .call(
                    ApiKey::DeleteTopics,
                    5,
                    &DeleteTopicsRequest::default()
                        .with_topic_names(vec![TopicName(s(resource))])
                        .with_timeout_ms(10_000),
                )
                .await;
            Code(r.responses[0].error_code)
        }
        CommitOffset => {
            let request = OffsetCommitRequest::default()
                .with_group_id(GroupId(s(resource)))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic("orders-eu"))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                        ]),
                ]);
            let r: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, 8, &request).await;
            Code(r.topics[0].partitions[0].error_code)
        }
        JoinGroup => {
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(s(resource)))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(bytes::Bytes::from_static(b"m")),
                ]);
            let r: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 9, &request).await;
            Code(r.error_code)
        }
        InitTransactionalProducer | InitIdempotentProducer => {
            let id = matches!(operation, InitTransactionalProducer)
                .then(|| TransactionalId(s(resource)));
            let request = InitProducerIdRequest::default()
                .with_transactional_id(id)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            let r: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, 4, &request).await;
            Code(r.error_code)
        }
        DescribeGroup => {
            let r: DescribeGroupsResponse = conn
                .call(
                    ApiKey::DescribeGroups,
                    5,
                    &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(resource))]),
                )
                .await;
            Code(r.groups[0].error_code)
        }
        ListGroups => {
            let r: ListGroupsResponse = conn
                .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
                .await;
            assert_eq!(r.error_code, 0);
            let mut names: Vec<&'static str> =
                r.groups.iter().map(|g| static_name(&g.group_id)).collect();
            names.sort();
            Listed(names)
        }
    }
}

/// Adds `authorization: Basic base64(user:password)` to every request.
#[derive(Clone)]
struct Basic(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Basic {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Result::Ok(r)
    }
}

type Client = StreamHouseClient<InterceptedService<Channel, Basic>>;

async fn client(agent: &RunningAgent, (user, password): User) -> Client {
    let channel = Channel::from_shared(format!("http://{}", agent.local_addr()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let header = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    StreamHouseClient::with_interceptor(channel, Basic(header.parse().unwrap()))
}

/// The result of a gRPC call: Ok, or Refused when the status is
/// PermissionDenied with AUTHORIZATION_FAILED; any other error fails.
fn status<T>(result: Result<tonic::Response<T>, tonic::Status>) -> (Expected, Option<T>) {
    match result {
        Result::Ok(r) => (Ok, Some(r.into_inner())),
        Err(e) => {
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
            assert_eq!(
                pb::status_error_code(&e),
                Some(ErrorCode::AuthorizationFailed),
                "{e:?}"
            );
            (Refused, None)
        }
    }
}

fn partition_code(error: i32) -> Expected {
    if error == ErrorCode::AuthorizationFailed as i32 {
        Refused
    } else {
        assert_eq!(error, 0);
        Ok
    }
}

async fn grpc(client: &mut Client, operation: Operation, resource: &str) -> Expected {
    match operation {
        Produce => {
            let r = client
                .produce(pb::ProduceRequest {
                    partitions: vec![pb::PartitionRecords {
                        topic: resource.to_string(),
                        partition: 0,
                        records: batch(),
                    }],
                })
                .await
                .unwrap()
                .into_inner();
            partition_code(r.results[0].error)
        }
        Fetch => {
            let r = client
                .fetch(pb::FetchRequest {
                    partitions: vec![pb::FetchPartition {
                        topic: resource.to_string(),
                        partition: 0,
                        offset: 0,
                        max_bytes: 1 << 16,
                    }],
                    max_wait_ms: 0,
                    max_bytes: 1 << 16,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            partition_code(r.partitions[0].error)
        }
        MetadataListing => {
            let r = client
                .list_topics(pb::ListTopicsRequest {})
                .await
                .unwrap()
                .into_inner();
            let mut names: Vec<&'static str> = r
                .topics
                .iter()
                .map(|t| static_name(&t.name))
                .filter(|n| !n.starts_with("kafka-by") && !n.starts_with("grpc-by"))
                .collect();
            names.sort();
            Listed(names)
        }
        CreateTopic => {
            status(
                client
                    .create_topic(pb::CreateTopicRequest {
                        name: resource.to_string(),
                        partition_count: 1,
                        ..Default::default()
                    })
                    .await,
            )
            .0
        }
        DeleteTopic => {
            status(
                client
                    .delete_topic(pb::DeleteTopicRequest {
                        name: resource.to_string(),
                    })
                    .await,
            )
            .0
        }
        CommitOffset => {
            let (result, r) = status(
                client
                    .commit_offsets(pb::CommitOffsetsRequest {
                        group_id: resource.to_string(),
                        member_id: None,
                        member_epoch: -1,
                        offsets: vec![pb::OffsetToCommit {
                            topic: "orders-eu".to_string(),
                            partition: 0,
                            offset: 1,
                            ..Default::default()
                        }],
                    })
                    .await,
            );
            if let Some(r) = r {
                assert_eq!(r.error, 0, "{r:?}");
            }
            result
        }
        JoinGroup => {
            status(
                client
                    .group_heartbeat(pb::GroupHeartbeatRequest {
                        group_id: resource.to_string(),
                        member_id: String::new(),
                        member_epoch: 0,
                        client_id: "acl-matrix".to_string(),
                        subscribed_topics: vec!["orders-eu".to_string()],
                        session_timeout_ms: 10_000,
                        ..Default::default()
                    })
                    .await,
            )
            .0
        }
        InitTransactionalProducer | InitIdempotentProducer => {
            let transactional_id =
                matches!(operation, InitTransactionalProducer).then(|| resource.to_string());
            status(
                client
                    .init_producer_id(pb::InitProducerIdRequest {
                        transactional_id,
                        transaction_timeout_ms: 60_000,
                        ..Default::default()
                    })
                    .await,
            )
            .0
        }
        DescribeGroup => {
            status(
                client
                    .describe_group(pb::DescribeGroupRequest {
                        group_id: resource.to_string(),
                    })
                    .await,
            )
            .0
        }
        ListGroups => {
            let r = client
                .list_groups(pb::ListGroupsRequest {})
                .await
                .unwrap()
                .into_inner();
            let mut names: Vec<&'static str> =
                r.groups.iter().map(|g| static_name(&g.group_id)).collect();
            names.sort();
            Listed(names)
        }
    }
}

/// Metadata naming topics: TOPIC_AUTHORIZATION_FAILED for a topic the
/// principal may not describe; automatic creation only with CREATE (on
/// the cluster or the topic), else TOPIC_AUTHORIZATION_FAILED, and
/// UNKNOWN_TOPIC_OR_PARTITION when the client does not ask for creation.
#[tokio::test]
async fn metadata_of_named_topics_and_automatic_creation() {
    let dir = tempfile::tempdir().unwrap();
    let mut acls = acls();
    acls.push(acl(
        "User:reader",
        Res::Topic,
        "auto-",
        Pat::Prefixed,
        Op::Create,
        Perm::Allow,
    ));
    let agent = secure_agent(&dir, &[WRITER, READER, DENIED, ADMIN], &acls, |_| {}).await;
    let mut admin = login(&agent, ADMIN).await;
    let r: CreateTopicsResponse = admin
        .call(ApiKey::CreateTopics, 7, &create_topics("orders-eu"))
        .await;
    assert_eq!(r.topics[0].error_code, 0);
    let metadata = |name: &str, create: bool| {
        MetadataRequest::default()
            .with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(s(name)))),
            ]))
            .with_allow_auto_topic_creation(create)
    };
    let rows: [(User, &str, bool, i16); 7] = [
        (DENIED, "orders-eu", false, TOPIC_DENIED),
        (WRITER, "orders-eu", false, 0),
        (WRITER, "payments", false, TOPIC_DENIED),
        (WRITER, "orders-auto", false, 3),
        (WRITER, "orders-auto", true, TOPIC_DENIED),
        // Create implies nothing else: reader may not describe auto-x.
        (READER, "auto-x", true, TOPIC_DENIED),
        (DENIED, "auto-created", true, 0),
    ];
    for (user, name, create, expected) in rows {
        let mut conn = login(&agent, user).await;
        let r: MetadataResponse = conn
            .call(ApiKey::Metadata, 12, &metadata(name, create))
            .await;
        assert_eq!(
            r.topics[0].error_code, expected,
            "User:{} {name} {create}",
            user.0
        );
    }
    agent.shutdown().await.unwrap();
}

/// Kafka's rules beyond one check per request: AddPartitionsToTxn fails
/// the refused topics and does not attempt the others; OffsetFetch leaves
/// out the topics the principal may not describe when it asks for all and
/// refuses the named ones; ListGroups lists every group to a principal
/// that may describe the cluster.
#[tokio::test]
async fn partial_refusals_follow_kafka() {
    const TXN: User = ("txn", "txn-pw");
    const OPS: User = ("ops", "ops-pw");
    let dir = tempfile::tempdir().unwrap();
    let mut acls = acls();
    acls.extend([
        acl(
            "User:txn",
            Res::TransactionalId,
            "tx",
            Pat::Literal,
            Op::Write,
            Perm::Allow,
        ),
        acl(
            "User:txn",
            Res::Topic,
            "orders-eu",
            Pat::Literal,
            Op::Write,
            Perm::Allow,
        ),
        acl(
            "User:ops",
            Res::Cluster,
            "kafka-cluster",
            Pat::Literal,
            Op::Describe,
            Perm::Allow,
        ),
    ]);
    let agent = secure_agent(&dir, &[READER, ADMIN, TXN, OPS], &acls, |_| {}).await;
    let mut admin = login(&agent, ADMIN).await;
    for name in ["orders-eu", "payments"] {
        let r: CreateTopicsResponse = admin
            .call(ApiKey::CreateTopics, 7, &create_topics(name))
            .await;
        assert_eq!(r.topics[0].error_code, 0);
    }

    // AddPartitionsToTxn.
    let mut txn = login(&agent, TXN).await;
    let r: InitProducerIdResponse = txn
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s("tx"))))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(r.error_code, 0);
    let add = |topics: &[&str]| {
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
            .with_v3_and_below_producer_id(r.producer_id)
            .with_v3_and_below_producer_epoch(r.producer_epoch)
            .with_v3_and_below_topics(
                topics
                    .iter()
                    .map(|t| {
                        add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(s(t)))
                            .with_partitions(vec![0])
                    })
                    .collect(),
            )
    };
    let codes = |r: &AddPartitionsToTxnResponse| -> Vec<(String, i16)> {
        let mut c: Vec<_> = r
            .results_by_topic_v3_and_below
            .iter()
            .map(|t| {
                (
                    t.name.to_string(),
                    t.results_by_partition[0].partition_error_code,
                )
            })
            .collect();
        c.sort();
        c
    };
    let refused: AddPartitionsToTxnResponse = txn
        .call(
            ApiKey::AddPartitionsToTxn,
            3,
            &add(&["orders-eu", "payments"]),
        )
        .await;
    assert_eq!(
        codes(&refused),
        [
            ("orders-eu".to_string(), 55),
            ("payments".to_string(), TOPIC_DENIED)
        ]
    );
    let added: AddPartitionsToTxnResponse = txn
        .call(ApiKey::AddPartitionsToTxn, 3, &add(&["orders-eu"]))
        .await;
    assert_eq!(codes(&added), [("orders-eu".to_string(), 0)]);

    // OffsetFetch: the admin commits to both topics; the reader sees one.
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("billing")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(
            ["orders-eu", "payments"]
                .iter()
                .map(|t| {
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_committed_offset(0),
                        ])
                })
                .collect(),
        );
    let r: OffsetCommitResponse = admin.call(ApiKey::OffsetCommit, 8, &commit).await;
    assert!(
        r.topics.iter().all(|t| t.partitions[0].error_code == 0),
        "{r:?}"
    );
    let mut reader = login(&agent, READER).await;
    let fetch = |topics: Option<Vec<&str>>| {
        OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("billing")))
                .with_topics(topics.map(|ts| {
                    ts.iter()
                        .map(|t| {
                            offset_fetch_request::OffsetFetchRequestTopics::default()
                                .with_name(TopicName(s(t)))
                                .with_partition_indexes(vec![0])
                        })
                        .collect()
                })),
        ])
    };
    let listed = |r: &OffsetFetchResponse| -> Vec<(String, i16)> {
        let mut c: Vec<_> = r.groups[0]
            .topics
            .iter()
            .map(|t| (t.name.to_string(), t.partitions[0].error_code))
            .collect();
        c.sort();
        c
    };
    let all: OffsetFetchResponse = reader.call(ApiKey::OffsetFetch, 9, &fetch(None)).await;
    assert_eq!(all.groups[0].error_code, 0);
    assert_eq!(listed(&all), [("orders-eu".to_string(), 0)]);
    let named: OffsetFetchResponse = reader
        .call(
            ApiKey::OffsetFetch,
            9,
            &fetch(Some(vec!["orders-eu", "payments"])),
        )
        .await;
    assert_eq!(
        listed(&named),
        [
            ("orders-eu".to_string(), 0),
            ("payments".to_string(), TOPIC_DENIED)
        ]
    );
    let admin_all: OffsetFetchResponse = admin.call(ApiKey::OffsetFetch, 9, &fetch(None)).await;
    assert_eq!(listed(&admin_all).len(), 2);

    // ListGroups: DESCRIBE on the cluster lists every group.
    let r: JoinGroupResponse = admin
        .call(
            ApiKey::JoinGroup,
            3,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(s("elsewhere")))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(100)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(bytes::Bytes::from_static(b"m")),
                ]),
        )
        .await;
    assert_eq!(r.error_code, 0);
    let groups = |r: ListGroupsResponse| {
        let mut g: Vec<String> = r.groups.iter().map(|g| g.group_id.to_string()).collect();
        g.sort();
        g
    };
    let mut ops = login(&agent, OPS).await;
    let r: ListGroupsResponse = ops
        .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
        .await;
    assert!(groups(r).contains(&"elsewhere".to_string()));
    let r: ListGroupsResponse = reader
        .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
        .await;
    assert!(!groups(r).contains(&"elsewhere".to_string()));
    agent.shutdown().await.unwrap();
}
