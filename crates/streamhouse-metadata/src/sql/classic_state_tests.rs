use super::*;

fn join(member: &str, protocols: &[&str]) -> ClassicJoin {
    ClassicJoin {
        group_id: "g".into(),
        member_id: member.into(),
        new_member: false,
        repeat: false,
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        initial_rebalance_delay_ms: 0,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), format!("{member}:{p}").into_bytes()))
            .collect(),
    }
}

fn sync(member: &str, generation: i32, assignments: &[(&str, &[u8])]) -> ClassicSync {
    ClassicSync {
        group_id: "g".into(),
        member_id: member.into(),
        group_instance_id: None,
        generation,
        protocol_type: None,
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), a.to_vec()))
            .collect(),
    }
}

fn generation_of(p: &JoinProgress) -> i32 {
    match p {
        JoinProgress::Joined { generation, .. } => *generation,
        JoinProgress::Waiting => panic!("still waiting"),
    }
}

/// A stable group of `members` (the first is the leader) at generation 1.
fn stable(members: &[&str]) -> Group {
    let mut g = Group::empty("g", 1_000);
    for m in members {
        g.join(&join(m, &["range"])).unwrap();
    }
    for m in members {
        g.join(&join(m, &["range"])).unwrap();
    }
    assert_eq!(g.phase, ClassicPhase::CompletingRebalance);
    let leader = g.leader.clone().unwrap();
    let assignments: Vec<(&str, &[u8])> = members.iter().map(|m| (*m, b"a".as_slice())).collect();
    g.sync(&sync(&leader, g.generation, &assignments)).unwrap();
    assert_eq!(g.phase, ClassicPhase::Stable);
    // Each member that joined alone made a generation: count from 1.
    g.generation = 1;
    for m in g.members.values_mut() {
        m.generation = 1;
    }
    g
}

#[test]
fn a_lone_member_joins_syncs_and_is_stable() {
    let mut g = Group::empty("g", 0);
    let p = g.join(&join("m1", &["range"])).unwrap();
    let JoinProgress::Joined {
        generation,
        leader,
        members,
        protocol_name,
        ..
    } = p
    else {
        panic!("not joined: {p:?}");
    };
    assert_eq!((generation, leader.as_str()), (1, "m1"));
    assert_eq!(protocol_name, "range");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].metadata, b"m1:range");
    assert_eq!(g.phase, ClassicPhase::CompletingRebalance);
    let s = g.sync(&sync("m1", 1, &[("m1", b"p0")])).unwrap();
    assert_eq!(
        s,
        SyncProgress::Assigned {
            protocol_type: "consumer".into(),
            protocol_name: "range".into(),
            assignment: b"p0".to_vec()
        }
    );
    assert_eq!(g.phase, ClassicPhase::Stable);
    g.heartbeat("m1", None, 1).unwrap();
}

#[test]
fn a_second_member_rebalances_and_both_get_the_new_generation() {
    let mut g = stable(&["m1"]);
    assert_eq!(g.generation, 1);
    assert_eq!(
        g.join(&join("m2", &["range"])).unwrap(),
        JoinProgress::Waiting
    );
    assert_eq!(g.phase, ClassicPhase::PreparingRebalance);
    assert!(matches!(
        g.heartbeat("m1", None, 1),
        Err(Error::RebalanceInProgress(_))
    ));
    // The new member keeps polling; the old one rejoins: both admitted.
    assert_eq!(
        g.join(&join("m2", &["range"])).unwrap(),
        JoinProgress::Waiting
    );
    let leader = g.join(&join("m1", &["range"])).unwrap();
    assert_eq!(generation_of(&leader), 2);
    let JoinProgress::Joined {
        leader: l, members, ..
    } = &leader
    else {
        unreachable!()
    };
    assert_eq!(l, "m1", "the old leader stays leader");
    assert_eq!(members.len(), 2);
    let follower = g.join(&join("m2", &["range"])).unwrap();
    assert_eq!(generation_of(&follower), 2);
    assert!(matches!(follower, JoinProgress::Joined { ref members, .. } if members.is_empty()));
    // The follower waits for the leader's assignments.
    assert_eq!(g.sync(&sync("m2", 2, &[])).unwrap(), SyncProgress::Waiting);
    g.sync(&sync(
        "m1",
        2,
        &[("m1", b"x"), ("m2", b"y"), ("ghost", b"z")],
    ))
    .unwrap();
    let SyncProgress::Assigned { assignment, .. } = g.sync(&sync("m2", 2, &[])).unwrap() else {
        panic!("not assigned");
    };
    assert_eq!(assignment, b"y");
    assert!(!g.members.contains_key("ghost"));
}

#[test]
fn members_that_do_not_rejoin_by_the_deadline_are_removed() {
    let mut g = stable(&["m1", "m2"]);
    g.join(&join("m3", &["range"])).unwrap();
    g.join(&join("m1", &["range"])).unwrap();
    assert_eq!(g.phase, ClassicPhase::PreparingRebalance);
    // m2 keeps its session alive but never rejoins; the others poll.
    for _ in 0..3 {
        g.now += 8_000;
        g.heartbeat("m2", None, 1).unwrap_err();
        assert_eq!(
            g.join(&join("m1", &["range"])).unwrap(),
            JoinProgress::Waiting
        );
        g.join(&join("m3", &["range"])).unwrap();
    }
    g.now += 8_000;
    g.expire();
    assert_eq!(g.phase, ClassicPhase::CompletingRebalance);
    assert_eq!(g.members.keys().collect::<Vec<_>>(), ["m1", "m3"]);
    assert_eq!(g.generation, 2);
    assert!(matches!(
        g.heartbeat("m2", None, 1),
        Err(Error::UnknownMember { .. })
    ));
}

#[test]
fn an_expired_session_rebalances_the_others() {
    let mut g = stable(&["m1", "m2"]);
    g.now += 6_000;
    g.heartbeat("m1", None, 1).unwrap();
    g.now += 6_000;
    g.expire();
    assert!(!g.members.contains_key("m2"));
    assert_eq!(g.phase, ClassicPhase::PreparingRebalance);
    assert_eq!(generation_of(&g.join(&join("m1", &["range"])).unwrap()), 2);
    // Everyone gone: the group is empty.
    g.now += 20_000;
    g.expire();
    assert_eq!(g.phase, ClassicPhase::Empty);
    assert!(g.members.is_empty());
}

#[test]
fn a_new_leader_is_chosen_when_the_leader_leaves() {
    let mut g = stable(&["m1", "m2"]);
    assert_eq!(g.leader.as_deref(), Some("m1"));
    assert!(g.leave(&[("m1".into(), None)])[0].is_ok());
    assert_eq!(g.phase, ClassicPhase::PreparingRebalance);
    let p = g.join(&join("m2", &["range"])).unwrap();
    assert!(matches!(p, JoinProgress::Joined { ref leader, .. } if leader == "m2"));
    let answers = g.leave(&[("m2".into(), None), ("nobody".into(), None)]);
    assert!(answers[0].is_ok());
    assert!(matches!(answers[1], Err(Error::UnknownMember { .. })));
    assert_eq!(g.phase, ClassicPhase::Empty);
}

#[test]
fn the_protocol_most_members_prefer_is_chosen() {
    let mut g = Group::empty("g", 0);
    g.join(&join("m1", &["range", "roundrobin"])).unwrap();
    g.join(&join("m2", &["roundrobin", "range"])).unwrap();
    g.join(&join("m3", &["roundrobin", "sticky", "range"]))
        .unwrap();
    for m in ["m1", "m2", "m3"] {
        g.join(&join(
            m,
            match m {
                "m1" => &["range", "roundrobin"],
                "m2" => &["roundrobin", "range"],
                _ => &["roundrobin", "sticky", "range"],
            },
        ))
        .unwrap();
    }
    assert_eq!(g.phase, ClassicPhase::CompletingRebalance);
    assert_eq!(g.protocol, "roundrobin");
    let err = g.join(&join("m4", &["sticky"])).unwrap_err();
    assert!(matches!(err, Error::InconsistentGroupProtocol { .. }));
    let mut other_type = join("m4", &["range"]);
    other_type.protocol_type = "connect".into();
    assert!(matches!(
        g.join(&other_type),
        Err(Error::InconsistentGroupProtocol { .. })
    ));
    assert_eq!(g.members.len(), 3);
}

#[test]
fn a_known_member_rejoining_unchanged_gets_its_generation_back() {
    let mut g = stable(&["m1", "m2"]);
    assert_eq!(generation_of(&g.join(&join("m2", &["range"])).unwrap()), 1);
    assert_eq!(g.phase, ClassicPhase::Stable);
    // Changed protocols rebalance.
    assert_eq!(
        g.join(&join("m2", &["range", "sticky"])).unwrap(),
        JoinProgress::Waiting
    );
    assert_eq!(g.phase, ClassicPhase::PreparingRebalance);
}

#[test]
fn a_static_member_replacement_fences_the_old_member_id() {
    let mut g = Group::empty("g", 0);
    let mut a = join("old", &["range"]);
    a.group_instance_id = Some("inst".into());
    g.join(&a).unwrap();
    g.join(&join("m2", &["range"])).unwrap();
    g.join(&a).unwrap();
    assert_eq!(g.generation, 2);
    assert_eq!(g.leader.as_deref(), Some("old"));
    g.sync(&sync("old", 2, &[("old", b"A"), ("m2", b"B")]))
        .unwrap();
    assert_eq!(g.phase, ClassicPhase::Stable);
    let mut b = a.clone();
    b.member_id = "new".into();
    b.new_member = true;
    let p = g.join(&b).unwrap();
    assert_eq!(generation_of(&p), 2, "no rebalance");
    assert_eq!(g.phase, ClassicPhase::Stable);
    assert_eq!(g.leader.as_deref(), Some("new"));
    let mut s = sync("new", 2, &[]);
    s.group_instance_id = Some("inst".into());
    assert!(
        matches!(g.sync(&s).unwrap(), SyncProgress::Assigned { assignment, .. } if assignment == b"A")
    );
    assert!(matches!(
        g.heartbeat("old", Some("inst"), 2),
        Err(Error::FencedInstanceId { .. })
    ));
    assert!(matches!(g.join(&a), Err(Error::FencedInstanceId { .. })));
    let answers = g.leave(&[("old".into(), Some("inst".into()))]);
    assert!(matches!(answers[0], Err(Error::FencedInstanceId { .. })));
    assert!(g.leave(&[(String::new(), Some("inst".into()))])[0].is_ok());
}

#[test]
fn sync_and_commit_errors() {
    let mut g = stable(&["m1", "m2"]);
    assert!(matches!(
        g.sync(&sync("m1", 7, &[])),
        Err(Error::IllegalGeneration { current: 1, .. })
    ));
    assert!(matches!(
        g.sync(&sync("zz", 1, &[])),
        Err(Error::UnknownMember { .. })
    ));
    let mut wrong = sync("m2", 1, &[]);
    wrong.protocol_name = Some("roundrobin".into());
    assert!(matches!(
        g.sync(&wrong),
        Err(Error::InconsistentGroupProtocol { .. })
    ));
    g.check_commit("m1", 1).unwrap();
    assert!(matches!(
        g.check_commit("m1", 0),
        Err(Error::IllegalGeneration { .. })
    ));
    assert!(matches!(
        g.check_commit("zz", 1),
        Err(Error::UnknownMember { .. })
    ));
    g.join(&join("m3", &["range"])).unwrap();
    assert!(matches!(
        g.sync(&sync("m1", 1, &[])),
        Err(Error::RebalanceInProgress(_))
    ));
    g.join(&join("m1", &["range"])).unwrap();
    g.join(&join("m2", &["range"])).unwrap();
    assert_eq!(g.phase, ClassicPhase::CompletingRebalance);
    assert!(matches!(
        g.check_commit("m1", 2),
        Err(Error::RebalanceInProgress(_))
    ));
    assert!(matches!(
        g.heartbeat("m2", None, 1),
        Err(Error::IllegalGeneration { .. })
    ));
}

#[test]
fn oversized_metadata_and_assignments_are_refused() {
    let mut j = join("m", &["range"]);
    j.protocols[0].1 = vec![0; MAX_MEMBER_BYTES + 1];
    assert!(matches!(
        validate_join(&j),
        Err(Error::InvalidArgument { .. })
    ));
    let s = ClassicSync {
        assignments: vec![("m".into(), vec![0; MAX_MEMBER_BYTES + 1])],
        ..sync("m", 1, &[])
    };
    assert!(matches!(
        validate_sync(&s),
        Err(Error::InvalidArgument { .. })
    ));
    let mut empty = join("m", &[]);
    empty.protocols.clear();
    assert!(validate_join(&empty).is_err());
}

#[test]
fn consumer_subscriptions_are_read() {
    let mut metadata = vec![0, 1, 0, 0, 0, 2];
    for t in ["orders", "pay"] {
        metadata.extend_from_slice(&(t.len() as i16).to_be_bytes());
        metadata.extend_from_slice(t.as_bytes());
    }
    metadata.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        subscription_topics(&metadata),
        Some(vec!["orders".to_string(), "pay".to_string()])
    );
    assert_eq!(subscription_topics(&[0, 1, 0x7f, 0, 0, 0]), None);
    let mut g = Group::empty("g", 0);
    let mut j = join("m", &["range"]);
    j.protocols[0].1 = metadata;
    g.join(&j).unwrap();
    assert_eq!(
        g.subscribed_topics(),
        Some(vec!["orders".to_string(), "pay".to_string()])
    );
}

#[test]
fn a_repeated_join_of_a_removed_member_is_not_admitted_again() {
    let mut g = stable(&["m1"]);
    assert_eq!(
        g.join(&join("m2", &["range"])).unwrap(),
        JoinProgress::Waiting
    );
    assert!(g.leave(&[("m2".into(), None)])[0].is_ok());
    let mut again = join("m2", &["range"]);
    again.repeat = true;
    assert!(matches!(g.join(&again), Err(Error::UnknownMember { .. })));
    assert!(!g.members.contains_key("m2"));
}

#[test]
fn state_bytes_count_every_member_byte() {
    let mut g = Group::empty("g", 0);
    assert_eq!(g.state_bytes(), 0);
    g.join(&join("m1", &["range"])).unwrap();
    // id, client id, host, protocol name and metadata "m1:range", and
    // the overhead of the member and of its one protocol.
    let joined = 2 + 1 + 10 + 5 + 8 + 2 * ENTRY_OVERHEAD_BYTES;
    assert_eq!(g.state_bytes(), joined);
    g.sync(&sync("m1", 1, &[("m1", &[0; 100])])).unwrap();
    assert_eq!(g.state_bytes(), joined + 100);
}

#[test]
fn joins_with_too_many_protocols_or_long_names_are_refused() {
    let mut many = join("m1", &["range"]);
    many.protocols = (0..=MAX_PROTOCOLS)
        .map(|i| (format!("p{i}"), Vec::new()))
        .collect();
    assert!(matches!(
        validate_join(&many),
        Err(Error::InvalidArgument {
            field: "protocols",
            ..
        })
    ));
    let mut long = join("m1", &["range"]);
    long.member_id = "m".repeat(MAX_NAME_BYTES + 1);
    assert!(matches!(
        validate_join(&long),
        Err(Error::InvalidArgument {
            field: "member id",
            ..
        })
    ));
    // Empty protocols still count against the member's bytes.
    let mut empty = join("m1", &["range"]);
    empty.protocols = vec![(String::new(), Vec::new()); MAX_PROTOCOLS];
    assert!(validate_join(&empty).is_ok());
    let mut g = Group::empty("g", 0);
    g.join(&empty).unwrap();
    assert!(g.state_bytes() > MAX_PROTOCOLS * ENTRY_OVERHEAD_BYTES);
}

/// `member`'s join asking for a first join phase of `delay_ms`.
fn delayed(member: &str, delay_ms: i32) -> ClassicJoin {
    ClassicJoin {
        initial_rebalance_delay_ms: delay_ms,
        ..join(member, &["range"])
    }
}

#[test]
fn the_first_join_phase_waits_for_more_members() {
    let mut g = Group::empty("g", 0);
    assert_eq!(
        g.join(&delayed("m1", 3_000)).unwrap(),
        JoinProgress::Waiting
    );
    g.now = 1_000;
    assert_eq!(
        g.join(&delayed("m2", 3_000)).unwrap(),
        JoinProgress::Waiting
    );
    // m2 came within the wait: it lasts 3 s from m2's join.
    g.now = 3_500;
    assert_eq!(
        g.join(&delayed("m1", 3_000)).unwrap(),
        JoinProgress::Waiting
    );
    g.expire();
    assert_eq!(g.phase, ClassicPhase::PreparingRebalance);
    g.now = 4_000;
    let p = g.join(&delayed("m2", 3_000)).unwrap();
    assert_eq!(generation_of(&p), 1, "one generation for both");
    let p = g.join(&delayed("m1", 3_000)).unwrap();
    let JoinProgress::Joined { members, .. } = p else {
        panic!("not joined: {p:?}");
    };
    assert_eq!(members.len(), 2, "the leader sees both");
    assert_eq!(g.initial_join_until_ms, 0);
}

#[test]
fn the_first_join_phase_never_waits_past_its_deadline() {
    let mut g = Group::empty("g", 0);
    let mut j = delayed("m1", 60_000);
    j.rebalance_timeout_ms = 5_000;
    assert_eq!(g.join(&j).unwrap(), JoinProgress::Waiting);
    assert_eq!(g.initial_join_until_ms, 5_000);
    g.now = 5_000;
    assert_eq!(generation_of(&g.join(&j).unwrap()), 1);
}

#[test]
fn only_a_group_without_members_waits() {
    let mut g = stable(&["m1"]);
    g.now += 10;
    // A second member rebalances a live group: no initial wait.
    assert_eq!(
        g.join(&delayed("m2", 3_000)).unwrap(),
        JoinProgress::Waiting
    );
    assert_eq!(g.initial_join_until_ms, 0);
    assert_eq!(generation_of(&g.join(&delayed("m1", 3_000)).unwrap()), 2);
    // Emptied, the group waits again for its next first members.
    g.leave(&[("m1".into(), None), ("m2".into(), None)]);
    assert_eq!(g.phase, ClassicPhase::Empty);
    assert_eq!(
        g.join(&delayed("m3", 3_000)).unwrap(),
        JoinProgress::Waiting
    );
    assert!(g.initial_join_until_ms > g.now);
}
