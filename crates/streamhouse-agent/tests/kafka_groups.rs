//! Kafka classic consumer groups over raw frames on an in-process agent:
//! JoinGroup waits until every member joined, the leader gets the member
//! list, SyncGroup hands out the leader's assignments, a new member makes
//! the others' heartbeats answer REBALANCE_IN_PROGRESS, commits of an old
//! generation are refused, and hostile JoinGroup frames close only their
//! connection.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use streamhouse_agent::RunningAgent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

async fn agent(dir: &tempfile::TempDir) -> RunningAgent {
    common::kafka::agent_with(dir, |c| c.limits.max_request_bytes = 1 << 20).await
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn frame<T: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &T) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(s("groups-test")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, api.request_header_version(version))
        .unwrap();
    body.encode(&mut payload, version).unwrap();
    let mut out = BytesMut::new();
    out.put_i32(payload.len() as i32);
    out.extend_from_slice(&payload);
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
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the agent neither answered nor closed the connection")
}

async fn call<Req: Encodable, Resp: Decodable>(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
    request: &Req,
) -> Resp {
    stream
        .write_all(&frame(api, version, 42, request))
        .await
        .unwrap();
    let mut bytes = answer(stream).await.expect("connection closed");
    let header = ResponseHeader::decode(&mut bytes, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 42);
    let body = Resp::decode(&mut bytes, version).unwrap();
    assert!(
        !bytes.has_remaining(),
        "{api:?} v{version}: bytes left over"
    );
    body
}

fn join_request(group: &str, member: &str, protocols: &[&str]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(
            protocols
                .iter()
                .map(|p| {
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(s(p))
                        .with_metadata(Bytes::from(format!("{member}-meta")))
                })
                .collect(),
        )
}

/// Joins as a new member at v5: MEMBER_ID_REQUIRED with an id, then the
/// join with it, which waits for the join phase to end.
async fn join(stream: &mut TcpStream, group: &str) -> JoinGroupResponse {
    let first: JoinGroupResponse = call(
        stream,
        ApiKey::JoinGroup,
        5,
        &join_request(group, "", &["range"]),
    )
    .await;
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    assert!(!first.member_id.is_empty());
    rejoin(stream, group, &first.member_id).await
}

async fn rejoin(stream: &mut TcpStream, group: &str, member: &str) -> JoinGroupResponse {
    let r: JoinGroupResponse = call(
        stream,
        ApiKey::JoinGroup,
        5,
        &join_request(group, member, &["range"]),
    )
    .await;
    assert_eq!(r.error_code, 0, "join of {member}");
    r
}

async fn sync(
    stream: &mut TcpStream,
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &str)],
) -> SyncGroupResponse {
    call(
        stream,
        ApiKey::SyncGroup,
        3,
        &SyncGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id(generation)
            .with_assignments(
                assignments
                    .iter()
                    .map(|(m, a)| {
                        sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(s(m))
                            .with_assignment(Bytes::from(a.to_string()))
                    })
                    .collect(),
            ),
    )
    .await
}

async fn heartbeat(stream: &mut TcpStream, group: &str, member: &str, generation: i32) -> i16 {
    let r: HeartbeatResponse = call(
        stream,
        ApiKey::Heartbeat,
        3,
        &HeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id(generation),
    )
    .await;
    r.error_code
}

async fn commit(stream: &mut TcpStream, group: &str, member: &str, generation: i32) -> i16 {
    let r: OffsetCommitResponse = call(
        stream,
        ApiKey::OffsetCommit,
        7,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id_or_member_epoch(generation)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(0),
                    ]),
            ]),
    )
    .await;
    r.topics[0].partitions[0].error_code
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

async fn create_topic(addr: SocketAddr) {
    let mut c = connect(addr).await;
    let r: CreateTopicsResponse = call(
        &mut c,
        ApiKey::CreateTopics,
        5,
        &CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s("t")))
                .with_num_partitions(2)
                .with_replication_factor(1),
        ]),
    )
    .await;
    assert_eq!(r.topics[0].error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_join_sync_rebalance_and_commit_by_generation() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let addr = agent.kafka_addr().unwrap();
    create_topic(addr).await;
    let (mut a, mut b) = (connect(addr).await, connect(addr).await);
    // A alone: generation 1.
    let first = join(&mut a, "g").await;
    let a_id = first.member_id.to_string();
    assert_eq!(
        (first.generation_id, first.leader.as_str()),
        (1, a_id.as_str())
    );
    let r = sync(&mut a, "g", &a_id, 1, &[(&a_id, "all")]).await;
    assert_eq!((r.error_code, r.assignment.as_ref()), (0, b"all".as_ref()));
    assert_eq!(heartbeat(&mut a, "g", &a_id, 1).await, 0);

    // B's join waits (its answer comes only once A rejoined).
    let b_join = tokio::spawn(async move {
        let r = join(&mut b, "g").await;
        (b, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b_join.is_finished(), "B's join did not wait for A");
    assert_eq!(
        heartbeat(&mut a, "g", &a_id, 1).await,
        REBALANCE_IN_PROGRESS
    );
    let a_join = rejoin(&mut a, "g", &a_id).await;
    let (mut b, b_join) = b_join.await.unwrap();
    let b_id = b_join.member_id.to_string();
    assert_eq!(a_join.generation_id, 2);
    assert_eq!(b_join.generation_id, 2);
    assert_eq!(a_join.leader.as_str(), a_id, "the leader stays");
    assert_eq!(b_join.leader.as_str(), a_id);
    let mut listed: Vec<(String, Bytes)> = a_join
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.metadata.clone()))
        .collect();
    listed.sort();
    let mut expected = vec![
        (a_id.clone(), Bytes::from(format!("{a_id}-meta"))),
        (b_id.clone(), Bytes::from(format!("{b_id}-meta"))),
    ];
    expected.sort();
    assert_eq!(listed, expected);
    assert!(
        b_join.members.is_empty(),
        "only the leader gets the members"
    );

    // B's sync waits for the leader's.
    let b_sync = tokio::spawn(async move {
        let r = sync(&mut b, "g", &b_id, 2, &[]).await;
        (b, b_id, r)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !b_sync.is_finished(),
        "B's sync did not wait for the leader"
    );
    let r = sync(&mut a, "g", &a_id, 2, &[(&a_id, "p0"), ("ghost", "x")]).await;
    assert_eq!(r.assignment.as_ref(), b"p0");
    let (mut b, b_id, r) = b_sync.await.unwrap();
    assert_eq!(r.error_code, 0);
    assert!(r.assignment.is_empty(), "no assignment given: empty");

    // Commits are fenced by generation.
    assert_eq!(commit(&mut a, "g", &a_id, 2).await, 0);
    assert_eq!(commit(&mut b, "g", &b_id, 1).await, ILLEGAL_GENERATION);
    assert_eq!(commit(&mut b, "g", "nobody", 2).await, UNKNOWN_MEMBER_ID);

    // A third member: the others' heartbeats say rebalance.
    let mut c = connect(addr).await;
    let c_join = tokio::spawn(async move { join(&mut c, "g").await });
    let mut seen = 0;
    for _ in 0..50 {
        seen = heartbeat(&mut b, "g", &b_id, 2).await;
        if seen != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, REBALANCE_IN_PROGRESS);
    // A protocol nobody shares is refused.
    let odd: JoinGroupResponse = call(
        &mut a,
        ApiKey::JoinGroup,
        5,
        &join_request("g", "odd", &["mine"]),
    )
    .await;
    assert_eq!(odd.error_code, INCONSISTENT_GROUP_PROTOCOL);
    // A and B leave; C's join completes alone.
    let left: LeaveGroupResponse = call(
        &mut a,
        ApiKey::LeaveGroup,
        3,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_members(vec![
                leave_group_request::MemberIdentity::default().with_member_id(s(&a_id)),
                leave_group_request::MemberIdentity::default().with_member_id(s(&b_id)),
            ]),
    )
    .await;
    assert_eq!(left.members.len(), 2);
    assert!(left.members.iter().all(|m| m.error_code == 0));
    let c_join = c_join.await.unwrap();
    assert_eq!(c_join.generation_id, 3);
    assert_eq!(c_join.members.len(), 1);

    // DescribeGroups and ListGroups show it.
    let d: DescribeGroupsResponse = call(
        &mut a,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
    )
    .await;
    assert_eq!(d.groups[0].group_state.as_str(), "CompletingRebalance");
    assert_eq!(d.groups[0].members.len(), 1);
    let l: ListGroupsResponse = call(
        &mut a,
        ApiKey::ListGroups,
        4,
        &ListGroupsRequest::default().with_states_filter(vec![s("completingrebalance")]),
    )
    .await;
    assert_eq!(l.groups.len(), 1);
    assert_eq!(l.groups[0].group_id.as_str(), "g");
    let deleted: DeleteGroupsResponse = call(
        &mut a,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]),
    )
    .await;
    assert_eq!(deleted.results[0].error_code, 68, "NON_EMPTY_GROUP");
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_starting_together_share_the_first_generation() {
    let dir = tempfile::tempdir().unwrap();
    let agent = common::kafka::agent_with(&dir, |c| {
        c.kafka_group_initial_rebalance_delay = Duration::from_millis(600);
    })
    .await;
    let addr = agent.kafka_addr().unwrap();
    create_topic(addr).await;
    let (mut a, mut b) = (connect(addr).await, connect(addr).await);
    let started = tokio::time::Instant::now();
    // A's join waits the initial delay for more members instead of
    // making a generation of its own; B joins meanwhile.
    let a_join = tokio::spawn(async move { join(&mut a, "together").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!a_join.is_finished(), "the first join did not wait");
    let b_join = join(&mut b, "together").await;
    let a_join = a_join.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!((a_join.generation_id, b_join.generation_id), (1, 1));
    let leader = a_join.leader.to_string();
    let leaders_view = if leader == a_join.member_id.as_str() {
        &a_join
    } else {
        &b_join
    };
    assert_eq!(leaders_view.members.len(), 2, "the leader sees both");
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_join_does_not_hold_up_the_connections_reading() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let addr = agent.kafka_addr().unwrap();
    let mut a = connect(addr).await;
    let first = join(&mut a, "w").await;
    let a_id = first.member_id.to_string();
    sync(&mut a, "w", &a_id, 1, &[]).await;
    // On one connection, B's join (which waits for A) and then A's
    // rejoin, pipelined: both are read and handled, answered in order.
    let mut pipe = connect(addr).await;
    let b: JoinGroupResponse = call(
        &mut pipe,
        ApiKey::JoinGroup,
        5,
        &join_request("w", "", &["range"]),
    )
    .await;
    let b_id = b.member_id.to_string();
    pipe.write_all(&frame(
        ApiKey::JoinGroup,
        5,
        1,
        &join_request("w", &b_id, &["range"]),
    ))
    .await
    .unwrap();
    pipe.write_all(&frame(
        ApiKey::JoinGroup,
        5,
        2,
        &join_request("w", &a_id, &["range"]),
    ))
    .await
    .unwrap();
    for expected in [1, 2] {
        let mut bytes = answer(&mut pipe).await.unwrap();
        let header = ResponseHeader::decode(&mut bytes, 0).unwrap();
        assert_eq!(header.correlation_id, expected);
        let r = JoinGroupResponse::decode(&mut bytes, 5).unwrap();
        assert_eq!((r.error_code, r.generation_id), (0, 2));
    }
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_whose_client_left_stops_keeping_it_alive() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let addr = agent.kafka_addr().unwrap();
    let mut a = connect(addr).await;
    let first = join(&mut a, "gone").await;
    let a_id = first.member_id.to_string();
    sync(&mut a, "gone", &a_id, 1, &[]).await;
    // B, with the shortest session (6 s), starts a join that waits for A, and
    // closes its connection.
    let mut b = connect(addr).await;
    let id: JoinGroupResponse = call(
        &mut b,
        ApiKey::JoinGroup,
        5,
        &join_request("gone", "", &["range"]),
    )
    .await;
    let short = join_request("gone", &id.member_id, &["range"]).with_session_timeout_ms(6_000);
    b.write_all(&frame(ApiKey::JoinGroup, 5, 1, &short))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    // The agent stopped joining on B's behalf: its session lapsed, and
    // A's rejoin completes the generation alone.
    assert_eq!(
        heartbeat(&mut a, "gone", &a_id, 1).await,
        REBALANCE_IN_PROGRESS
    );
    let r = rejoin(&mut a, "gone", &a_id).await;
    assert_eq!(r.generation_id, 2);
    let members: Vec<&str> = r.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(members, [a_id.as_str()]);
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn hostile_join_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let addr = agent.kafka_addr().unwrap();
    let raw = |api: i16, version: i16, body: &[u8]| {
        let mut p = BytesMut::new();
        p.put_i16(api);
        p.put_i16(version);
        p.put_i32(9);
        p.put_i16(-1);
        if version >= 6 {
            p.put_u8(0);
        }
        p.extend_from_slice(body);
        let mut out = BytesMut::new();
        out.put_i32(p.len() as i32);
        out.extend_from_slice(&p);
        out.freeze()
    };
    // JoinGroup v1: group, timeouts, member, protocol type, then a
    // protocol count of 2^31-1 in a few bytes.
    let mut huge = vec![
        0, 1, b'g', 0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10, 0, 0, 0, 1, b'c',
    ];
    huge.extend_from_slice(&i32::MAX.to_be_bytes());
    huge.extend_from_slice(&[0; 8]);
    // The same at v6 (compact array: varint count of 2^32).
    let compact = [
        2, b'g', 0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10, 1, 2, b'c', 0xff, 0xff, 0xff, 0xff, 0x0f,
    ];
    // SyncGroup v0 with a forged assignment count, a truncated LeaveGroup
    // v3, a JoinGroup version no Kafka release defines.
    let mut sync = vec![0, 1, b'g', 0, 0, 0, 1, 0, 1, b'm'];
    sync.extend_from_slice(&i32::MAX.to_be_bytes());
    let cases: Vec<(&str, Bytes)> = vec![
        ("huge protocol count", raw(11, 1, &huge)),
        ("huge compact protocol count", raw(11, 6, &compact)),
        ("huge assignment count", raw(14, 0, &sync)),
        ("truncated leave", raw(13, 3, &[0, 1, b'g', 0x7f, 0xff])),
        ("join v99", raw(11, 99, &[0; 32])),
        ("garbage describe", raw(15, 0, &[0xff; 7])),
    ];
    for (what, bytes) in cases {
        let mut c = connect(addr).await;
        c.write_all(&bytes).await.unwrap();
        assert!(answer(&mut c).await.is_none(), "{what}: answered");
    }
    // The agent still serves groups.
    let mut c = connect(addr).await;
    let r = join(&mut c, "after").await;
    assert_eq!(r.generation_id, 1);
    agent.shutdown().await.unwrap();
}
