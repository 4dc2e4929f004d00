//! KIP-848 consumer groups over raw Kafka frames: ConsumerGroupHeartbeat
//! members join, split a topic's partitions, a partition moves only once
//! its owner released it, stale epochs are fenced, members leave;
//! ConsumerGroupDescribe shows them by topic id; OffsetCommit and
//! OffsetFetch v9 check member epochs; topic ids resolve through
//! Metadata; hostile array counts close the connection.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, MetadataRequest,
    MetadataResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use streamhouse_agent::RunningAgent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

mod common;
const FENCED_MEMBER_EPOCH: i16 = 110;
const UNKNOWN_MEMBER_ID: i16 = 25;
const STALE_MEMBER_EPOCH: i16 = 113;
const UNSUPPORTED_ASSIGNOR: i16 = 112;
const INVALID_REQUEST: i16 = 42;
const GROUP_ID_NOT_FOUND: i16 = 69;
const UNKNOWN_TOPIC_ID: i16 = 100;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;

async fn agent(dir: &tempfile::TempDir) -> RunningAgent {
    common::kafka::agent_with(dir, |c| {
        c.kafka_default_partitions = 4;
        c.group_heartbeat_interval = Duration::from_millis(321);
    })
    .await
}

struct Conn {
    stream: TcpStream,
    next_id: i32,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.unwrap(),
            next_id: 1,
        }
    }

    /// Sends `body` as `api` at `version` and decodes the answer.
    async fn call<Q: Encodable, A: Decodable>(&mut self, api: ApiKey, version: i16, body: &Q) -> A {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("groups-test")));
        let mut payload = BytesMut::new();
        header
            .encode(&mut payload, api.request_header_version(version))
            .unwrap();
        body.encode(&mut payload, version).unwrap();
        self.stream.write_all(&framed(&payload)).await.unwrap();
        let mut bytes = answer(&mut self.stream)
            .await
            .unwrap_or_else(|| panic!("{api:?} v{version}: connection closed"));
        let h = ResponseHeader::decode(&mut bytes, api.response_header_version(version)).unwrap();
        assert_eq!(h.correlation_id, id);
        let out = A::decode(&mut bytes, version).unwrap();
        assert!(
            !bytes.has_remaining(),
            "{api:?} v{version}: bytes left over"
        );
        out
    }
}

fn framed(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(payload.len() as i32);
    out.extend_from_slice(payload);
    out.freeze()
}

/// The next answer, or `None` when the agent closed the connection.
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

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join(member: &str) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(member))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
        .with_topic_partitions(Some(Vec::new()))
}

/// A heartbeat that reports nothing changed (null subscription and owned
/// partitions).
fn beat(member: &str, epoch: i32) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(member))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(-1)
}

/// A heartbeat reporting `owned` partitions of topic `id`.
fn owning(
    member: &str,
    epoch: i32,
    id: Uuid,
    owned: &BTreeSet<i32>,
) -> ConsumerGroupHeartbeatRequest {
    beat(member, epoch).with_topic_partitions(Some(vec![
        TopicPartitions::default()
            .with_topic_id(id)
            .with_partitions(owned.iter().copied().collect()),
    ]))
}

/// The partitions of topic `id` an answer assigns (it must carry one).
fn assigned(r: &ConsumerGroupHeartbeatResponse, id: Uuid) -> BTreeSet<i32> {
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let a = r.assignment.as_ref().expect("an assignment");
    assert!(a.topic_partitions.iter().all(|t| t.topic_id == id));
    a.topic_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().copied())
        .collect()
}

async fn heartbeat(
    c: &mut Conn,
    r: &ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    c.call(ApiKey::ConsumerGroupHeartbeat, 1, r).await
}

fn commit(member: &str, epoch: i32) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(epoch)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(5),
                ]),
        ])
}

fn commit_code(r: &OffsetCommitResponse) -> i16 {
    r.topics[0].partitions[0].error_code
}

fn fetch(member: Option<&str>, epoch: i32) -> OffsetFetchRequest {
    OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(member.map(s))
            .with_member_epoch(epoch)
            .with_topics(Some(vec![
                OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0]),
            ])),
    ])
}

#[tokio::test]
async fn members_share_partitions_handed_over_once_released() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let mut c = Conn::open(agent.kafka_addr().unwrap()).await;

    // The topic (auto-created, 4 partitions) and its id.
    let m: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(TopicName(s("t")))),
                ]))
                .with_allow_auto_topic_creation(true),
        )
        .await;
    let id = m.topics[0].topic_id;
    assert!(!id.is_nil());
    assert_eq!(m.topics[0].partitions.len(), 4);
    // Metadata by topic id finds it; an unknown id does not.
    let by_id: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(None)
                    .with_topic_id(id),
                MetadataRequestTopic::default()
                    .with_name(None)
                    .with_topic_id(Uuid::from_u128(1)),
            ])),
        )
        .await;
    assert_eq!(by_id.topics[0].name.as_ref().unwrap().as_str(), "t");
    assert_eq!(by_id.topics[0].topic_id, id);
    assert_eq!(by_id.topics[1].error_code, UNKNOWN_TOPIC_ID);

    // A joins and gets every partition.
    let a0 = heartbeat(&mut c, &join("member-a")).await;
    assert_eq!(a0.member_id.as_ref().unwrap().as_str(), "member-a");
    assert_eq!(a0.heartbeat_interval_ms, 321);
    let a_parts = assigned(&a0, id);
    assert_eq!(a_parts, BTreeSet::from([0, 1, 2, 3]));
    let a_epoch = a0.member_epoch;
    assert!(a_epoch > 0);
    let ack = heartbeat(&mut c, &owning("member-a", a_epoch, id, &a_parts)).await;
    assert_eq!(assigned(&ack, id), a_parts);

    // B joins: A owns everything, so B waits.
    let b0 = heartbeat(&mut c, &join("member-b")).await;
    assert!(assigned(&b0, id).is_empty());
    let b_epoch = b0.member_epoch;

    // A learns its smaller share with a new epoch (nothing reported:
    // its owned partitions are unchanged).
    let a1 = heartbeat(&mut c, &beat("member-a", a_epoch)).await;
    let a_kept = assigned(&a1, id);
    assert_eq!(a_kept.len(), 2);
    assert!(a1.member_epoch > a_epoch);
    let released: BTreeSet<i32> = a_parts.difference(&a_kept).copied().collect();

    // Until A reports the release, B gets none of it.
    let b1 = heartbeat(&mut c, &owning("member-b", b_epoch, id, &BTreeSet::new())).await;
    assert!(assigned(&b1, id).is_empty());
    let b_epoch = b1.member_epoch;

    // A stale epoch is fenced and changes nothing.
    let stale = heartbeat(&mut c, &owning("member-a", a_epoch, id, &a_kept)).await;
    assert_eq!(stale.error_code, FENCED_MEMBER_EPOCH);
    let a_epoch = a1.member_epoch;

    // Offsets: a stale epoch is STALE_MEMBER_EPOCH at v9, the current one
    // commits; OffsetFetch v9 checks the member the same way.
    let r: OffsetCommitResponse = c
        .call(ApiKey::OffsetCommit, 9, &commit("member-a", a_epoch - 1))
        .await;
    assert_eq!(commit_code(&r), STALE_MEMBER_EPOCH);
    let r: OffsetCommitResponse = c
        .call(ApiKey::OffsetCommit, 8, &commit("member-a", a_epoch - 1))
        .await;
    assert_eq!(commit_code(&r), FENCED_MEMBER_EPOCH);
    // A still owns partition 0 (every partition until it reports the
    // release).
    let r: OffsetCommitResponse = c
        .call(ApiKey::OffsetCommit, 9, &commit("member-a", a_epoch))
        .await;
    assert_eq!(commit_code(&r), 0);
    let f: OffsetFetchResponse = c
        .call(ApiKey::OffsetFetch, 9, &fetch(Some("member-a"), a_epoch))
        .await;
    assert_eq!(f.groups[0].error_code, 0);
    assert_eq!(f.groups[0].topics[0].partitions[0].committed_offset, 5);
    let f: OffsetFetchResponse = c
        .call(
            ApiKey::OffsetFetch,
            9,
            &fetch(Some("member-a"), a_epoch - 1),
        )
        .await;
    assert_eq!(f.groups[0].error_code, STALE_MEMBER_EPOCH);
    let f: OffsetFetchResponse = c
        .call(ApiKey::OffsetFetch, 9, &fetch(Some("nobody"), 1))
        .await;
    assert_eq!(f.groups[0].error_code, UNKNOWN_MEMBER_ID);
    let f: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 9, &fetch(None, -1)).await;
    assert_eq!(f.groups[0].error_code, 0);

    // A releases; B then gets exactly what A gave up.
    let a2 = heartbeat(&mut c, &owning("member-a", a_epoch, id, &a_kept)).await;
    assert_eq!(assigned(&a2, id), a_kept);
    let b2 = heartbeat(&mut c, &beat("member-b", b_epoch)).await;
    let b_parts = assigned(&b2, id);
    assert_eq!(b_parts, released);
    assert!(b_parts.is_disjoint(&a_kept));
    let b_epoch = b2.member_epoch;
    let b3 = heartbeat(&mut c, &owning("member-b", b_epoch, id, &b_parts)).await;
    assert_eq!(assigned(&b3, id), b_parts);

    // ConsumerGroupDescribe: both members, their assignments by topic id.
    let d: ConsumerGroupDescribeResponse = c
        .call(
            ApiKey::ConsumerGroupDescribe,
            1,
            &ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![GroupId(s("g")), GroupId(s("missing"))]),
        )
        .await;
    let g = &d.groups[0];
    assert_eq!(g.error_code, 0);
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.assignor_name.as_str(), "uniform");
    assert_eq!(g.members.len(), 2);
    for m in &g.members {
        let want = if m.member_id.as_str() == "member-a" {
            &a_kept
        } else {
            &b_parts
        };
        let tp = &m.assignment.topic_partitions[0];
        assert_eq!((tp.topic_id, tp.topic_name.0.as_str()), (id, "t"));
        assert_eq!(
            &tp.partitions.iter().copied().collect::<BTreeSet<_>>(),
            want
        );
        assert_eq!(m.subscribed_topic_names[0].0.as_str(), "t");
        assert_eq!(m.client_id.as_str(), "groups-test");
        assert_eq!(m.member_type, 1);
    }
    assert_eq!(d.groups[1].error_code, GROUP_ID_NOT_FOUND);

    // B leaves; A gets everything back.
    let left = heartbeat(&mut c, &beat("member-b", -1)).await;
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    let a3 = heartbeat(&mut c, &beat("member-a", a_epoch)).await;
    assert_eq!(assigned(&a3, id), BTreeSet::from([0, 1, 2, 3]));
    // A heartbeat of a member that left is UNKNOWN_MEMBER_ID.
    let gone = heartbeat(&mut c, &beat("member-b", b_epoch)).await;
    assert_eq!(gone.error_code, UNKNOWN_MEMBER_ID);
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn refused_heartbeats_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let mut c = Conn::open(agent.kafka_addr().unwrap()).await;
    // v0: the agent names the member.
    let v0: ConsumerGroupHeartbeatResponse =
        c.call(ApiKey::ConsumerGroupHeartbeat, 0, &join("")).await;
    assert_eq!(v0.error_code, 0, "{:?}", v0.error_message);
    assert!(!v0.member_id.as_ref().unwrap().is_empty());
    // v1: the client names it.
    let r = heartbeat(&mut c, &join("")).await;
    assert_eq!(r.error_code, INVALID_REQUEST);
    let sticky = join("m").with_server_assignor(Some(s("sticky")));
    assert_eq!(
        heartbeat(&mut c, &sticky).await.error_code,
        UNSUPPORTED_ASSIGNOR
    );
    let range = join("ranged").with_server_assignor(Some(s("range")));
    assert_eq!(heartbeat(&mut c, &range).await.error_code, 0);
    let uniform = join("m").with_server_assignor(Some(s("uniform")));
    assert_eq!(heartbeat(&mut c, &uniform).await.error_code, 0);
    let regex = join("r").with_subscribed_topic_regex(Some(s("t.*")));
    assert_eq!(heartbeat(&mut c, &regex).await.error_code, INVALID_REQUEST);
    let unknown = heartbeat(&mut c, &beat("nobody", 3)).await;
    assert_eq!(unknown.error_code, UNKNOWN_MEMBER_ID);
    assert!(unknown.error_message.is_some());
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn hostile_counts_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let addr = agent.kafka_addr().unwrap();
    let huge = [0xff, 0xff, 0xff, 0xff, 0x07];
    // Request header v2: key, version, correlation id, null client id, no
    // tagged fields.
    let header = |key: ApiKey, version: i16| {
        let mut h = BytesMut::new();
        h.put_i16(key as i16);
        h.put_i16(version);
        h.put_i32(9);
        h.put_i16(-1);
        h.put_u8(0);
        h
    };
    let mut heartbeat = header(ApiKey::ConsumerGroupHeartbeat, 1);
    heartbeat.extend_from_slice(&[2, b'g', 2, b'm', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    heartbeat.extend_from_slice(&huge);
    // Owned partitions: one topic whose partition array is huge.
    let mut owned = header(ApiKey::ConsumerGroupHeartbeat, 0);
    owned.extend_from_slice(&[2, b'g', 2, b'm', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    owned.extend_from_slice(&[0, 0, 2]); // no topics, null assignor, one owned topic
    owned.extend_from_slice(&[0; 16]);
    owned.extend_from_slice(&huge);
    let mut describe = header(ApiKey::ConsumerGroupDescribe, 0);
    describe.extend_from_slice(&huge);
    for (what, body) in [
        ("heartbeat", heartbeat),
        ("owned", owned),
        ("describe", describe),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&framed(&body)).await.unwrap();
        assert!(answer(&mut stream).await.is_none(), "{what}: answered");
    }
    // Still serving.
    let mut c = Conn::open(addr).await;
    let r = heartbeat_ok(&mut c).await;
    assert_eq!(r.error_code, 0);
    agent.shutdown().await.unwrap();
}

async fn heartbeat_ok(c: &mut Conn) -> ConsumerGroupHeartbeatResponse {
    heartbeat(c, &join("after")).await
}

/// CreateTopics, Metadata, heartbeats and DeleteTopics agree on a topic's
/// id; a topic created again under the same name gets a new one.
#[tokio::test]
async fn topic_ids_agree_everywhere_and_change_on_recreation() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{
        CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    };
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let mut c = Conn::open(agent.kafka_addr().unwrap()).await;
    let create = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(s("t")))
            .with_num_partitions(2)
            .with_replication_factor(1),
    ]);
    let created: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &create).await;
    let id = created.topics[0].topic_id;
    assert!(!id.is_nil());
    let m: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(s("t")))),
            ])),
        )
        .await;
    assert_eq!(m.topics[0].topic_id, id);
    let joined = heartbeat(&mut c, &join("m")).await;
    assert_eq!(assigned(&joined, id), BTreeSet::from([0, 1]));
    let left = heartbeat(&mut c, &beat("m", -1)).await;
    assert_eq!(left.error_code, 0);

    let delete = DeleteTopicsRequest::default().with_topics(vec![
        DeleteTopicState::default()
            .with_name(None)
            .with_topic_id(id),
    ]);
    let deleted: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 6, &delete).await;
    let r = &deleted.responses[0];
    assert_eq!((r.error_code, r.topic_id), (0, id));
    assert_eq!(r.name.as_ref().unwrap().as_str(), "t");
    let again: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 6, &delete).await;
    assert_eq!(again.responses[0].error_code, UNKNOWN_TOPIC_ID);

    // Created again (the clock moved on): another id.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let recreated: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &create).await;
    assert_eq!(recreated.topics[0].error_code, 0);
    assert_ne!(recreated.topics[0].topic_id, id);
    agent.shutdown().await.unwrap();
}

/// A classic JoinGroup for `group` with an unknown member id (admitted as
/// new at v5).
fn classic_join(group: &str, member: &str) -> kafka_protocol::messages::JoinGroupRequest {
    kafka_protocol::messages::JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0])),
        ])
}

#[tokio::test]
async fn a_group_id_serves_one_protocol_while_it_has_members() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let mut c = Conn::open(agent.kafka_addr().unwrap()).await;
    // A KIP-848 member holds group g: a classic join is refused.
    assert_eq!(heartbeat(&mut c, &join("m1")).await.error_code, 0);
    let refused: kafka_protocol::messages::JoinGroupResponse = c
        .call(ApiKey::JoinGroup, 5, &classic_join("g", "classic-1"))
        .await;
    assert_eq!(refused.error_code, INCONSISTENT_GROUP_PROTOCOL);
    // A classic member holds group c: a KIP-848 join is refused.
    let joined: kafka_protocol::messages::JoinGroupResponse = c
        .call(ApiKey::JoinGroup, 5, &classic_join("c", "classic-2"))
        .await;
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    let mut other = join("m2");
    other.group_id = GroupId(s("c"));
    let r = heartbeat(&mut c, &other).await;
    assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);
    assert!(r.error_message.is_some());
    agent.shutdown().await.unwrap();
}
