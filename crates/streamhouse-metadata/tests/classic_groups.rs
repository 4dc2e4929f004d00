//! Kafka classic consumer groups in the metadata store, run against every
//! backend: SQLite (a temporary file) and PostgreSQL (a fresh schema per
//! test), as the conformance suite.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use streamhouse_metadata::*;

#[macro_use]
mod common;
use common::Backend;

conformance!(
    two_members_join_sync_heartbeat_and_leave,
    commits_are_fenced_by_generation,
    classic_and_server_side_groups_do_not_mix,
    classic_groups_are_listed_described_and_deleted,
    offsets_are_deleted_only_for_topics_not_consumed,
    a_silent_member_is_expired_by_the_database_clock,
    members_starting_together_share_the_first_generation,
);

/// A consumer protocol subscription to `topics`.
fn subscription(topics: &[&str]) -> Vec<u8> {
    let mut m = vec![0, 1];
    m.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        m.extend_from_slice(&(t.len() as i16).to_be_bytes());
        m.extend_from_slice(t.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 0, 0]);
    m
}

fn join(group: &str, member: &str, session_ms: i32) -> ClassicJoin {
    ClassicJoin {
        group_id: group.into(),
        member_id: member.into(),
        new_member: false,
        repeat: false,
        group_instance_id: None,
        client_id: "test".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: session_ms,
        rebalance_timeout_ms: 10_000,
        initial_rebalance_delay_ms: 0,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription(&["t"]))],
    }
}

fn sync(group: &str, member: &str, generation: i32, assignments: &[(&str, &[u8])]) -> ClassicSync {
    ClassicSync {
        group_id: group.into(),
        member_id: member.into(),
        group_instance_id: None,
        generation,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), a.to_vec()))
            .collect(),
    }
}

fn topic(name: &str, partitions: u32) -> TopicConfig {
    TopicConfig {
        name: name.to_string(),
        partition_count: partitions,
        retention_ms: None,
        config: HashMap::new(),
    }
}

fn offsets(topic: &str, offset: i64) -> Vec<OffsetCommit> {
    vec![OffsetCommit {
        topic: topic.into(),
        partition: 0,
        offset,
        metadata: None,
    }]
}

/// Polls a join until it completes, as the agent does.
async fn joined(s: &Arc<dyn MetadataStore>, j: ClassicJoin) -> JoinProgress {
    for _ in 0..400 {
        match s.classic_join(j.clone()).await.unwrap() {
            JoinProgress::Waiting => tokio::time::sleep(Duration::from_millis(25)).await,
            done => return done,
        }
    }
    panic!("join of {} never completed", j.member_id);
}

async fn synced(s: &Arc<dyn MetadataStore>, r: ClassicSync) -> Vec<u8> {
    for _ in 0..400 {
        match s.classic_sync(r.clone()).await.unwrap() {
            SyncProgress::Waiting => tokio::time::sleep(Duration::from_millis(25)).await,
            SyncProgress::Assigned { assignment, .. } => return assignment,
        }
    }
    panic!("sync of {} never completed", r.member_id);
}

fn generation(p: &JoinProgress) -> i32 {
    match p {
        JoinProgress::Joined { generation, .. } => *generation,
        JoinProgress::Waiting => panic!("waiting"),
    }
}

/// m1 and m2 in a stable group; returns the generation.
async fn two_stable(s: &Arc<dyn MetadataStore>, group: &str) -> i32 {
    let first = joined(s, join(group, "m1", 30_000)).await;
    let g1 = generation(&first);
    synced(s, sync(group, "m1", g1, &[("m1", b"all")])).await;
    // m2 arrives: m1 learns by heartbeat and rejoins.
    assert_eq!(
        s.classic_join(join(group, "m2", 30_000)).await.unwrap(),
        JoinProgress::Waiting
    );
    assert!(matches!(
        s.classic_heartbeat(group, "m1", None, g1).await,
        Err(Error::RebalanceInProgress(_))
    ));
    let (a, b) = tokio::join!(
        joined(s, join(group, "m1", 30_000)),
        joined(s, join(group, "m2", 30_000))
    );
    let g2 = generation(&a);
    assert_eq!(g2, generation(&b));
    assert_eq!(g2, g1 + 1);
    let JoinProgress::Joined {
        leader, members, ..
    } = &a
    else {
        unreachable!()
    };
    assert_eq!(leader, "m1");
    assert_eq!(members.len(), 2);
    assert_eq!(members[1].metadata, subscription(&["t"]));
    let (x, y) = tokio::join!(
        synced(s, sync(group, "m2", g2, &[])),
        synced(s, sync(group, "m1", g2, &[("m1", b"p0"), ("m2", b"p1")]))
    );
    assert_eq!(
        (x.as_slice(), y.as_slice()),
        (b"p1".as_slice(), b"p0".as_slice())
    );
    g2
}

async fn two_members_join_sync_heartbeat_and_leave(b: &Backend) {
    let s = &b.store;
    let g = two_stable(s, "cycle").await;
    s.classic_heartbeat("cycle", "m1", None, g).await.unwrap();
    s.classic_heartbeat("cycle", "m2", None, g).await.unwrap();
    assert!(matches!(
        s.classic_heartbeat("cycle", "m2", None, g - 1).await,
        Err(Error::IllegalGeneration { .. })
    ));
    assert!(matches!(
        s.classic_heartbeat("cycle", "zz", None, g).await,
        Err(Error::UnknownMember { .. })
    ));
    // Another store on the same database sees the same group.
    let other = open(&b.url).await.unwrap();
    let d = other
        .describe_classic_group("cycle")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.phase, ClassicPhase::Stable);
    assert_eq!(d.members.len(), 2);
    assert_eq!(d.members[1].assignment, b"p1");
    let left = s
        .classic_leave("cycle", &[("m2".into(), None), ("ghost".into(), None)])
        .await
        .unwrap();
    assert!(left[0].is_ok());
    assert!(matches!(left[1], Err(Error::UnknownMember { .. })));
    assert!(matches!(
        s.classic_heartbeat("cycle", "m1", None, g).await,
        Err(Error::RebalanceInProgress(_))
    ));
    let alone = joined(s, join("cycle", "m1", 30_000)).await;
    assert_eq!(generation(&alone), g + 1);
    s.classic_leave("cycle", &[("m1".into(), None)])
        .await
        .unwrap();
    let d = s.describe_classic_group("cycle").await.unwrap().unwrap();
    assert_eq!(d.phase, ClassicPhase::Empty);
    assert!(d.members.is_empty());
}

async fn commits_are_fenced_by_generation(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("t", 1)).await.unwrap();
    let g = two_stable(s, "fenced").await;
    s.commit_group_offsets("fenced", Some(("m1", g)), &offsets("t", 5))
        .await
        .unwrap();
    assert!(matches!(
        s.commit_group_offsets("fenced", Some(("m1", g - 1)), &offsets("t", 6))
            .await,
        Err(Error::IllegalGeneration { .. })
    ));
    assert!(matches!(
        s.commit_group_offsets("fenced", Some(("zz", g)), &offsets("t", 6))
            .await,
        Err(Error::UnknownMember { .. })
    ));
    assert!(matches!(
        s.commit_group_offsets("fenced", None, &offsets("t", 6))
            .await,
        Err(Error::GroupNotEmpty(_))
    ));
    // While the next generation's assignments are being sent.
    s.classic_join(join("fenced", "m3", 30_000)).await.unwrap();
    let (a, _, _) = tokio::join!(
        joined(s, join("fenced", "m1", 30_000)),
        joined(s, join("fenced", "m2", 30_000)),
        joined(s, join("fenced", "m3", 30_000))
    );
    assert!(matches!(
        s.commit_group_offsets("fenced", Some(("m1", generation(&a))), &offsets("t", 7))
            .await,
        Err(Error::RebalanceInProgress(_))
    ));
    assert_eq!(
        s.fetch_offset("fenced", "t", 0)
            .await
            .unwrap()
            .unwrap()
            .offset,
        5
    );
}

async fn classic_and_server_side_groups_do_not_mix(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("t", 2)).await.unwrap();
    let server_side = |member_id: String, epoch: i32| GroupHeartbeat {
        group_id: "mixed".into(),
        member_id,
        member_epoch: epoch,
        client_id: "test".into(),
        subscription: vec!["t".into()],
        owned: vec![],
        session_timeout_ms: 30_000,
        assignor: None,
    };
    let a = s
        .group_heartbeat(server_side(String::new(), JOIN_GROUP_EPOCH))
        .await
        .unwrap();
    assert!(matches!(
        s.classic_join(join("mixed", "c1", 30_000)).await,
        Err(Error::InconsistentGroupProtocol { .. })
    ));
    // Once empty, the classic protocol may take the group over...
    s.group_heartbeat(server_side(a.member_id.clone(), LEAVE_GROUP_EPOCH))
        .await
        .unwrap();
    joined(s, join("mixed", "c1", 30_000)).await;
    // ...and the server-side protocol is refused while it is live.
    assert!(matches!(
        s.group_heartbeat(server_side(String::new(), JOIN_GROUP_EPOCH))
            .await,
        Err(Error::InconsistentGroupProtocol { .. })
    ));
    s.classic_leave("mixed", &[("c1".into(), None)])
        .await
        .unwrap();
    s.group_heartbeat(server_side(String::new(), JOIN_GROUP_EPOCH))
        .await
        .unwrap();
}

async fn classic_groups_are_listed_described_and_deleted(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("t", 1)).await.unwrap();
    joined(s, join("busy", "m1", 30_000)).await;
    joined(s, join("idle", "m1", 30_000)).await;
    s.classic_leave("idle", &[("m1".into(), None)])
        .await
        .unwrap();
    s.commit_group_offsets("idle", None, &offsets("t", 3))
        .await
        .unwrap();
    // Requests for a group that does not exist leave no trace.
    assert!(matches!(
        s.classic_heartbeat("ghost", "m1", None, 1).await,
        Err(Error::UnknownMember { .. })
    ));
    assert!(matches!(
        s.classic_sync(sync("ghost", "m1", 1, &[])).await,
        Err(Error::UnknownMember { .. })
    ));
    let listed = s.list_group_states().await.unwrap();
    let states: Vec<(&str, &str, &str)> = listed
        .iter()
        .map(|l| (l.group_id.as_str(), l.state.as_str(), l.group_type.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("busy", "CompletingRebalance", "classic"),
            ("idle", "Empty", "classic")
        ]
    );
    assert_eq!(
        s.list_groups().await.unwrap(),
        [("busy".to_string(), 1), ("idle".to_string(), 0)]
    );
    let d = s.describe_group("busy").await.unwrap();
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].subscription, ["t"]);
    assert!(matches!(
        s.delete_group("busy").await,
        Err(Error::GroupNotEmpty(_))
    ));
    s.delete_group("idle").await.unwrap();
    assert!(s.describe_classic_group("idle").await.unwrap().is_none());
    assert!(s.fetch_offsets("idle").await.unwrap().is_empty());
    assert!(matches!(
        s.delete_group("idle").await,
        Err(Error::GroupNotFound(_))
    ));
}

async fn offsets_are_deleted_only_for_topics_not_consumed(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("t", 1)).await.unwrap();
    s.create_topic(topic("u", 1)).await.unwrap();
    s.commit_group_offsets("od", None, &offsets("t", 1))
        .await
        .unwrap();
    s.commit_group_offsets("od", None, &offsets("u", 1))
        .await
        .unwrap();
    joined(s, join("od", "m1", 30_000)).await;
    let answers = s
        .delete_group_offsets("od", &[("t".into(), 0), ("u".into(), 0)])
        .await
        .unwrap();
    assert!(matches!(
        answers[0],
        Err(Error::GroupSubscribedToTopic { .. })
    ));
    assert!(answers[1].is_ok());
    let left: Vec<String> = s
        .fetch_offsets("od")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.topic)
        .collect();
    assert_eq!(left, ["t"]);
    assert!(matches!(
        s.delete_group_offsets("nope", &[("t".into(), 0)]).await,
        Err(Error::GroupNotFound(_))
    ));
}

async fn a_silent_member_is_expired_by_the_database_clock(b: &Backend) {
    let s = &b.store;
    let first = joined(s, join("expiry", "quiet", 1_000)).await;
    synced(s, sync("expiry", "quiet", generation(&first), &[])).await;
    let mut j = join("expiry", "loud", 30_000);
    j.rebalance_timeout_ms = 30_000;
    assert_eq!(
        s.classic_join(j.clone()).await.unwrap(),
        JoinProgress::Waiting
    );
    // "quiet" never rejoins; its one-second session lapses well before
    // the 30-second join deadline, and the join completes without it.
    let done = joined(s, j).await;
    let JoinProgress::Joined {
        leader, members, ..
    } = done
    else {
        unreachable!()
    };
    assert_eq!(leader, "loud");
    assert_eq!(members.len(), 1);
}

async fn members_starting_together_share_the_first_generation(b: &Backend) {
    let s = &b.store;
    let delayed = |member: &str| ClassicJoin {
        initial_rebalance_delay_ms: 500,
        ..join("together", member, 30_000)
    };
    // The first member waits the initial delay by the database clock
    // rather than making a generation of its own.
    assert_eq!(
        s.classic_join(delayed("m1")).await.unwrap(),
        JoinProgress::Waiting
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (a, b) = tokio::join!(joined(s, delayed("m1")), joined(s, delayed("m2")));
    assert_eq!((generation(&a), generation(&b)), (1, 1));
    let JoinProgress::Joined { members, .. } = &a else {
        unreachable!()
    };
    assert_eq!(members.len(), 2, "the leader m1 sees both members");
}
