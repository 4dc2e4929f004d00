//! One conformance suite, run against every metadata backend: SQLite (a
//! temporary file) and PostgreSQL (a fresh schema per test).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use streamhouse_metadata::*;

#[macro_use]
mod common;
use common::Backend;

conformance!(
    topic_lifecycle,
    invalid_input_is_rejected_with_typed_errors,
    concurrent_commits_keep_offsets_dense,
    commits_from_two_store_instances_keep_offsets_dense,
    segments_are_found_by_offset,
    deleted_topic_rejects_its_chunks_only,
    recreated_topic_sees_no_old_data_or_offsets,
    consumer_offsets,
    agent_registry,
    idempotent_retries_get_their_original_offsets,
    one_commit_over_hundreds_of_partitions_decides_each_on_its_own,
    sequence_gaps_and_old_epochs_are_rejected,
    a_retry_racing_on_another_store_commits_once,
    a_resent_request_of_any_number_of_batches_appends_nothing,
    a_commit_in_doubt_is_settled,
    an_abort_racing_a_commit_to_a_new_partition_covers_it,
    group_assignment_is_balanced_incremental_and_exclusive,
    a_group_asking_for_the_range_assignor_gets_contiguous_ranges,
    expired_members_lose_their_partitions,
    group_offsets_are_fenced_by_member_epoch,
    groups_are_listed_described_and_deleted,
    transactions_commit_and_abort_with_markers_offsets_and_lso,
    ended_transactions_cannot_end_later_ones_and_zombies_are_fenced,
    expired_transactions_are_found_and_aborted,
    ends_keeping_the_epoch_end_only_the_transaction_they_name,
    job_leases_are_exclusive_and_expire,
    retention_drops_old_segments_and_advances_log_start,
    log_start_advances_to_an_offset_monotonically_up_to_the_last_stable_offset,
    segments_are_replaced_atomically_and_objects_tracked,
    objects_are_claimed_only_unreferenced_and_claims_fence_commits,
    topics_are_altered,
    a_retried_epoch_bump_gets_the_bumped_identity,
    a_delayed_heartbeat_with_an_older_epoch_changes_nothing,
    offsets_are_committed_only_by_the_partitions_owner,
    a_group_is_never_deleted_under_a_joining_member,
    added_partitions_and_created_topics_are_assigned_at_once,
);

fn topic(name: &str, partitions: u32) -> TopicConfig {
    TopicConfig {
        name: name.to_string(),
        partition_count: partitions,
        retention_ms: Some(86_400_000),
        config: HashMap::new(),
    }
}

fn chunk(topic_id: TopicId, partition: u32, spans: &[i64]) -> ChunkCommit {
    ChunkCommit {
        topic_id,
        partition,
        byte_start: 0,
        batches: spans
            .iter()
            .map(|&span| BatchCommit {
                byte_length: 100 * span as u64,
                offset_span: span,
                record_count: span,
                min_timestamp: 1_000,
                max_timestamp: 2_000,
                producer: None,
            })
            .collect(),
    }
}

/// A chunk of idempotent batches: (epoch, base sequence, records) each.
fn producer_chunk(topic_id: TopicId, id: i64, batches: &[(i16, i32, i32)]) -> ChunkCommit {
    let mut c = chunk(
        topic_id,
        0,
        &batches.iter().map(|b| b.2 as i64).collect::<Vec<_>>(),
    );
    for (b, &(epoch, base_sequence, record_count)) in c.batches.iter_mut().zip(batches) {
        b.producer = Some(ProducerBatch {
            producer_id: id,
            epoch,
            base_sequence,
            record_count,
            transactional: false,
        });
    }
    c
}

fn base(o: &BatchOutcome) -> i64 {
    match o {
        BatchOutcome::Appended { base_offset } => *base_offset,
        other => panic!("expected Appended, got {other:?}"),
    }
}

fn object(chunks: Vec<ChunkCommit>) -> ObjectCommit {
    ObjectCommit {
        object_key: format!("objects/{}.sho", unique()),
        size_bytes: 1_000,
        chunks,
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{:?}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
    )
    .replace([' ', ':', '{', '}', ','], "_")
}

async fn topic_lifecycle(b: &Backend) {
    let s = &b.store;
    let mut config = topic("orders", 3);
    config
        .config
        .insert(CLEANUP_POLICY.into(), "compact".into());
    let created = s.create_topic(config.clone()).await.unwrap();
    assert_eq!(created.name, "orders");
    assert_eq!(created.partition_count, 3);
    assert_eq!(created.config, config.config);
    assert!(created.created_at_ms > 1_600_000_000_000);

    let got = s.get_topic("orders").await.unwrap().unwrap();
    assert_eq!(got, created);
    assert!(s.get_topic("missing").await.unwrap().is_none());

    s.create_topic(topic("alpha", 1)).await.unwrap();
    let names: Vec<_> = s
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["alpha", "orders"]);

    for p in 0..3 {
        let st = s.partition_state(created.id, p).await.unwrap();
        assert_eq!((st.log_start_offset, st.next_offset), (0, 0));
    }

    s.delete_topic("orders").await.unwrap();
    assert!(s.get_topic("orders").await.unwrap().is_none());
    assert!(matches!(
        s.delete_topic("orders").await,
        Err(Error::TopicNotFound(n)) if n == "orders"
    ));
}

async fn invalid_input_is_rejected_with_typed_errors(b: &Backend) {
    let s = &b.store;
    for name in ["", "has space", "a/b", ".", "..", &"x".repeat(250)] {
        let err = s.create_topic(topic(name, 1)).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid(streamhouse_core::Error::InvalidTopicName { .. })
            ),
            "{name:?}: {err}"
        );
    }
    for count in [0, streamhouse_core::names::MAX_PARTITIONS + 1] {
        let err = s.create_topic(topic("t", count)).await.unwrap_err();
        assert!(err.to_string().contains("partition_count"), "{err}");
    }
    let mut bad = topic("t", 1);
    bad.config.insert("retention.bytes".into(), "lots".into());
    assert!(matches!(
        s.create_topic(bad).await,
        Err(Error::InvalidConfig { key, .. }) if key == "retention.bytes"
    ));

    let t = s.create_topic(topic("t", 2)).await.unwrap();
    assert!(matches!(
        s.create_topic(topic("t", 2)).await,
        Err(Error::TopicAlreadyExists(n)) if n == "t"
    ));
    assert!(matches!(
        s.partition_state(t.id, 2).await,
        Err(Error::PartitionIdNotFound { partition: 2, .. })
    ));
    assert!(matches!(
        s.commit_offset("g", "t", 2, 0, None).await,
        Err(Error::PartitionNotFound {
            partition: 2,
            partition_count: 2,
            ..
        })
    ));
    assert!(matches!(
        s.commit_offset("g", "nope", 0, 0, None).await,
        Err(Error::TopicNotFound(_))
    ));
    assert!(matches!(
        s.commit_offset("g", "t", 0, -5, None).await,
        Err(Error::InvalidArgument {
            field: "offset",
            ..
        })
    ));
    assert!(matches!(
        s.commit_offset("", "t", 0, 1, None).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        s.heartbeat_agent("ghost").await,
        Err(Error::AgentNotFound(_))
    ));
    // Nothing above left partial state behind.
    assert_eq!(s.list_topics().await.unwrap().len(), 1);
}

/// Checks that the committed ranges of every partition tile `0..next_offset`
/// with no gap and no overlap.
async fn assert_dense(s: &Arc<dyn MetadataStore>, topic_id: TopicId, ranges: Vec<(u32, i64, i64)>) {
    let mut by_partition: BTreeMap<u32, Vec<(i64, i64)>> = BTreeMap::new();
    for (p, base, span) in ranges {
        by_partition.entry(p).or_default().push((base, span));
    }
    for (p, mut rs) in by_partition {
        rs.sort();
        let mut expect = 0;
        for (base, span) in rs {
            assert_eq!(base, expect, "partition {p}: gap or overlap at {base}");
            expect += span;
        }
        let st = s.partition_state(topic_id, p).await.unwrap();
        assert_eq!(st.next_offset, expect, "partition {p}: next_offset");
        // The segment rows tile the same range.
        let segs = s.segments(topic_id, p, 0, 1_000_000).await.unwrap();
        let mut at = 0;
        for seg in segs {
            assert_eq!(seg.base_offset, at);
            at = seg.last_offset + 1;
        }
        assert_eq!(at, expect);
    }
}

async fn commit_many(
    stores: Vec<Arc<dyn MetadataStore>>,
    topic_id: TopicId,
    tasks: usize,
    commits: usize,
) -> Vec<(u32, i64, i64)> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let s = stores[t % stores.len()].clone();
        handles.push(tokio::spawn(async move {
            let mut ranges = Vec::new();
            for c in 0..commits {
                // Each commit touches a varying subset of partitions, in a
                // varying order, with several batches per chunk.
                let mut chunks = Vec::new();
                for p in 0..4u32 {
                    if !(t + c + p as usize).is_multiple_of(3) {
                        let spans = [1 + (t % 3) as i64, 1 + (c % 5) as i64];
                        chunks.push(chunk(topic_id, p, &spans));
                    }
                }
                if c % 2 == 1 {
                    chunks.reverse();
                }
                let outcome = s.commit_object(&object(chunks.clone())).await.unwrap();
                for (chunk, result) in chunks.iter().zip(outcome) {
                    let outcomes = result.unwrap();
                    for (batch, o) in chunk.batches.iter().zip(outcomes) {
                        ranges.push((chunk.partition, base(&o), batch.offset_span));
                    }
                }
            }
            ranges
        }));
    }
    let mut all = Vec::new();
    for h in futures::future::join_all(handles).await {
        all.extend(h.unwrap());
    }
    all
}

async fn concurrent_commits_keep_offsets_dense(b: &Backend) {
    let t = b.store.create_topic(topic("dense", 4)).await.unwrap();
    let ranges = commit_many(vec![b.store.clone()], t.id, 8, 25).await;
    assert_dense(&b.store, t.id, ranges).await;
}

async fn commits_from_two_store_instances_keep_offsets_dense(b: &Backend) {
    let t = b.store.create_topic(topic("shared", 4)).await.unwrap();
    let other = b.open_again().await;
    let ranges = commit_many(vec![b.store.clone(), other], t.id, 6, 20).await;
    assert_dense(&b.store, t.id, ranges).await;
}

async fn segments_are_found_by_offset(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("segs", 1)).await.unwrap();
    // Ten segments of 10 offsets each: [0..9], [10..19], ...
    for _ in 0..10 {
        s.commit_object(&object(vec![chunk(t.id, 0, &[4, 6])]))
            .await
            .unwrap();
    }
    let segs = s.segments(t.id, 0, 0, 3).await.unwrap();
    assert_eq!(
        segs.iter().map(|s| s.base_offset).collect::<Vec<_>>(),
        [0, 10, 20]
    );
    assert_eq!(segs[0].last_offset, 9);
    assert_eq!(segs[0].record_count, 10);
    assert_eq!(segs[0].byte_length, 1000);
    assert_eq!(segs[0].object_size, 1000);
    let segs = s.segments(t.id, 0, 57, 2).await.unwrap();
    assert_eq!(
        segs.iter().map(|s| s.base_offset).collect::<Vec<_>>(),
        [50, 60]
    );
    assert!(s.segments(t.id, 0, 100, 10).await.unwrap().is_empty());
    assert_eq!(s.segments(t.id, 0, 99, 10).await.unwrap().len(), 1);
}

async fn deleted_topic_rejects_its_chunks_only(b: &Backend) {
    let s = &b.store;
    let gone = s.create_topic(topic("gone", 1)).await.unwrap();
    let kept = s.create_topic(topic("kept", 1)).await.unwrap();
    s.delete_topic("gone").await.unwrap();
    let outcome = s
        .commit_object(&object(vec![
            chunk(gone.id, 0, &[5]),
            chunk(kept.id, 0, &[3]),
        ]))
        .await
        .unwrap();
    assert_eq!(
        outcome[0],
        Err(ChunkRejected::PartitionGone {
            topic_id: gone.id,
            partition: 0
        })
    );
    assert_eq!(
        outcome[1],
        Ok(vec![BatchOutcome::Appended { base_offset: 0 }])
    );
    assert_eq!(s.partition_state(kept.id, 0).await.unwrap().next_offset, 3);
}

async fn recreated_topic_sees_no_old_data_or_offsets(b: &Backend) {
    let s = &b.store;
    let old = s.create_topic(topic("again", 2)).await.unwrap();
    s.commit_object(&object(vec![chunk(old.id, 0, &[10])]))
        .await
        .unwrap();
    s.commit_offset("g", "again", 0, 7, None).await.unwrap();
    s.delete_topic("again").await.unwrap();
    assert!(matches!(
        s.partition_state(old.id, 0).await,
        Err(Error::PartitionIdNotFound { .. })
    ));

    let new = s.create_topic(topic("again", 2)).await.unwrap();
    assert_ne!(new.id, old.id);
    assert_eq!(s.partition_state(new.id, 0).await.unwrap().next_offset, 0);
    assert!(s.segments(new.id, 0, 0, 10).await.unwrap().is_empty());
    assert!(s.segments(old.id, 0, 0, 10).await.unwrap().is_empty());
    assert!(s.fetch_offset("g", "again", 0).await.unwrap().is_none());
    let outcome = s
        .commit_object(&object(vec![chunk(new.id, 0, &[2])]))
        .await
        .unwrap();
    assert_eq!(
        outcome[0],
        Ok(vec![BatchOutcome::Appended { base_offset: 0 }])
    );
}

async fn consumer_offsets(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("events", 3)).await.unwrap();
    s.create_topic(topic("audit", 1)).await.unwrap();
    assert!(s.fetch_offset("g1", "events", 0).await.unwrap().is_none());
    s.commit_offset("g1", "events", 0, 10, Some("meta"))
        .await
        .unwrap();
    s.commit_offset("g1", "events", 2, 5, None).await.unwrap();
    s.commit_offset("g1", "audit", 0, 1, None).await.unwrap();
    s.commit_offset("g2", "events", 0, 99, None).await.unwrap();
    s.commit_offset("g1", "events", 0, 12, None).await.unwrap();

    let got = s.fetch_offset("g1", "events", 0).await.unwrap().unwrap();
    assert_eq!((got.offset, got.metadata.as_deref()), (12, None));
    let all: Vec<_> = s
        .fetch_offsets("g1")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.topic, o.partition, o.offset))
        .collect();
    assert_eq!(
        all,
        [
            ("audit".to_string(), 0, 1),
            ("events".to_string(), 0, 12),
            ("events".to_string(), 2, 5)
        ]
    );
    assert_eq!(
        s.fetch_offset("g2", "events", 0)
            .await
            .unwrap()
            .unwrap()
            .offset,
        99
    );
}

async fn agent_registry(b: &Backend) {
    let s = &b.store;
    let reg = |id: &str, group: &str, zone: Option<&str>| AgentRegistration {
        agent_id: id.into(),
        group: group.into(),
        address: format!("127.0.0.1:{}", 50000 + id.len()),
        zone: zone.map(str::to_string),
        kafka_address: (id == "a1").then(|| "127.0.0.1:9092".to_string()),
    };
    s.register_agent(reg("a1", "prod", Some("az1")))
        .await
        .unwrap();
    s.register_agent(reg("a2", "prod", None)).await.unwrap();
    s.register_agent(reg("b1", "staging", Some("az2")))
        .await
        .unwrap();

    let prod = s.list_agents(Some("prod")).await.unwrap();
    assert_eq!(
        prod.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>(),
        ["a1", "a2"]
    );
    assert_eq!(prod[0].zone.as_deref(), Some("az1"));
    assert!(prod.iter().all(|a| a.is_live(Duration::from_secs(5))));
    assert_eq!(s.list_agents(None).await.unwrap().len(), 3);

    // Heartbeat ages grow by the store's clock, and a heartbeat resets them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.heartbeat_agent("a1").await.unwrap();
    let prod = s.list_agents(Some("prod")).await.unwrap();
    let age = |id: &str| {
        prod.iter()
            .find(|a| a.agent_id == id)
            .unwrap()
            .heartbeat_age
    };
    assert!(age("a2") >= Duration::from_millis(250), "{:?}", age("a2"));
    assert!(age("a1") < age("a2"));
    assert!(!prod[1].is_live(Duration::from_millis(100)));
    assert!(prod[0].is_live(Duration::from_secs(5)));

    // Every agent id has its own node id; the Kafka address is as registered.
    let all = s.list_agents(None).await.unwrap();
    let node_ids: std::collections::HashMap<String, i32> = all
        .iter()
        .map(|a| (a.agent_id.clone(), a.node_id))
        .collect();
    let distinct: std::collections::HashSet<i32> = node_ids.values().copied().collect();
    assert_eq!(distinct.len(), 3, "{node_ids:?}");
    assert_eq!(prod[0].kafka_address.as_deref(), Some("127.0.0.1:9092"));
    assert_eq!(prod[1].kafka_address, None);

    // Re-registering moves an agent; deregistering removes it. Node ids
    // stay with the agent id, also across deregistration.
    s.register_agent(reg("a2", "staging", None)).await.unwrap();
    assert_eq!(s.list_agents(Some("prod")).await.unwrap().len(), 1);
    s.deregister_agent("a1").await.unwrap();
    s.deregister_agent("a1").await.unwrap();
    assert!(s.list_agents(Some("prod")).await.unwrap().is_empty());
    s.register_agent(reg("a1", "prod", None)).await.unwrap();
    for a in s.list_agents(None).await.unwrap() {
        assert_eq!(node_ids[&a.agent_id], a.node_id, "{}", a.agent_id);
    }
    s.deregister_agent("a1").await.unwrap();
    assert!(matches!(
        s.heartbeat_agent("a1").await,
        Err(Error::AgentNotFound(_))
    ));
    assert!(
        s.register_agent(reg("", "prod", None)).await.is_err(),
        "empty agent id"
    );
}

async fn idempotent_retries_get_their_original_offsets(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("idem", 1)).await.unwrap();
    let p = s.init_producer_id(None).await.unwrap();
    assert_eq!(p.epoch, 0);
    let id = p.producer_id;
    let commit = |batches: &[(i16, i32, i32)]| object(vec![producer_chunk(t.id, id, batches)]);
    let out = s
        .commit_object(&commit(&[(0, 0, 3), (0, 3, 2)]))
        .await
        .unwrap();
    assert_eq!(
        out[0]
            .as_ref()
            .unwrap()
            .iter()
            .map(base)
            .collect::<Vec<_>>(),
        [0, 3]
    );
    // A retry of both, then one new batch, in one chunk: the retries are
    // answered with their offsets and only the new batch is committed.
    let out = s
        .commit_object(&commit(&[(0, 0, 3), (0, 3, 2), (0, 5, 4)]))
        .await
        .unwrap();
    assert_eq!(
        out[0].as_ref().unwrap(),
        &vec![
            BatchOutcome::Duplicate { base_offset: 0 },
            BatchOutcome::Duplicate { base_offset: 3 },
            BatchOutcome::Appended { base_offset: 5 },
        ]
    );
    assert_eq!(s.partition_state(t.id, 0).await.unwrap().next_offset, 9);
    // The new batch's segment covers only its own bytes (after the two
    // duplicates in the chunk).
    let segs = s.segments(t.id, 0, 5, 10).await.unwrap();
    assert_eq!((segs[0].base_offset, segs[0].last_offset), (5, 8));
    assert_eq!((segs[0].byte_start, segs[0].byte_length), (500, 400));
    // Batches without a producer id mix freely with idempotent ones.
    let mut c = producer_chunk(t.id, id, &[(0, 9, 1)]);
    c.batches.insert(0, chunk(t.id, 0, &[2]).batches[0]);
    let out = s.commit_object(&object(vec![c])).await.unwrap();
    assert_eq!(
        out[0]
            .as_ref()
            .unwrap()
            .iter()
            .map(base)
            .collect::<Vec<_>>(),
        [9, 11]
    );
}

async fn sequence_gaps_and_old_epochs_are_rejected(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("fence", 1)).await.unwrap();
    let p0 = s.init_producer_id(None).await.unwrap();
    let id = p0.producer_id;
    let commit = |batches: &[(i16, i32, i32)]| object(vec![producer_chunk(t.id, id, batches)]);
    let one = |out: CommitOutcome| out[0].as_ref().unwrap()[0].clone();
    // The first batch of an epoch starts at sequence 0.
    assert_eq!(
        one(s.commit_object(&commit(&[(0, 4, 1)])).await.unwrap()),
        BatchOutcome::Rejected(BatchRejected::OutOfOrderSequence {
            producer_id: id,
            expected: 0,
            received: 4
        })
    );
    assert_eq!(
        base(&one(s.commit_object(&commit(&[(0, 0, 2)])).await.unwrap())),
        0
    );
    // A gap is out of order and commits nothing.
    assert_eq!(
        one(s.commit_object(&commit(&[(0, 3, 1)])).await.unwrap()),
        BatchOutcome::Rejected(BatchRejected::OutOfOrderSequence {
            producer_id: id,
            expected: 2,
            received: 3
        })
    );
    assert_eq!(s.partition_state(t.id, 0).await.unwrap().next_offset, 2);

    // A new epoch fences the old one, whose batches now fail. (Its re-init
    // is the same bump again, answered with epoch 1: see
    // `a_retried_epoch_bump_gets_the_bumped_identity`.)
    let p1 = s.init_producer_id(Some(p0)).await.unwrap();
    assert_eq!((p1.producer_id, p1.epoch), (id, 1));
    assert_eq!(
        one(s.commit_object(&commit(&[(0, 2, 1)])).await.unwrap()),
        BatchOutcome::Rejected(BatchRejected::ProducerFenced {
            producer_id: id,
            epoch: 0,
            current_epoch: 1
        })
    );
    assert_eq!(s.init_producer_id(Some(p0)).await.unwrap(), p1);
    // The new epoch restarts its sequences at 0.
    assert_eq!(
        base(&one(s.commit_object(&commit(&[(1, 0, 1)])).await.unwrap())),
        2
    );
    // Epochs never issued and unknown ids are rejected.
    assert!(matches!(
        one(s.commit_object(&commit(&[(5, 0, 1)])).await.unwrap()),
        BatchOutcome::Rejected(BatchRejected::UnknownProducer { epoch: 5, .. })
    ));
    let unknown = object(vec![producer_chunk(t.id, id + 1000, &[(0, 0, 1)])]);
    assert!(matches!(
        one(s.commit_object(&unknown).await.unwrap()),
        BatchOutcome::Rejected(BatchRejected::UnknownProducer { .. })
    ));
    assert!(matches!(
        s.init_producer_id(Some(ProducerIdentity {
            producer_id: id + 1000,
            epoch: 0
        }))
        .await,
        Err(Error::UnknownProducer(_))
    ));
    assert_eq!(s.partition_state(t.id, 0).await.unwrap().next_offset, 3);
}

async fn a_retry_racing_on_another_store_commits_once(b: &Backend) {
    let t = b.store.create_topic(topic("race", 1)).await.unwrap();
    let other = b.open_again().await;
    let id = b.store.init_producer_id(None).await.unwrap().producer_id;
    for seq in 0..20 {
        // The same batch committed through two stores at once, as a retry
        // reaching a second agent would be.
        let c = object(vec![producer_chunk(t.id, id, &[(0, seq * 2, 2)])]);
        let mut c2 = c.clone();
        c2.object_key.push_str(".retry");
        let (x, y) = tokio::join!(b.store.commit_object(&c), other.commit_object(&c2));
        let (x, y) = (
            x.unwrap()[0].clone().unwrap()[0].clone(),
            y.unwrap()[0].clone().unwrap()[0].clone(),
        );
        let offsets = match (&x, &y) {
            (
                BatchOutcome::Appended { base_offset: a },
                BatchOutcome::Duplicate { base_offset: d },
            )
            | (
                BatchOutcome::Duplicate { base_offset: d },
                BatchOutcome::Appended { base_offset: a },
            ) => (*a, *d),
            other => panic!("expected one append and one duplicate, got {other:?}"),
        };
        assert_eq!(offsets, (seq as i64 * 2, seq as i64 * 2));
    }
    assert_eq!(
        b.store.partition_state(t.id, 0).await.unwrap().next_offset,
        40
    );
}

/// A simulated group member: heartbeats and takes what it is assigned.
struct Member {
    id: String,
    epoch: i32,
    owned: Vec<TopicPartition>,
}

impl Member {
    async fn join(
        s: &Arc<dyn MetadataStore>,
        group: &str,
        topics: &[&str],
        session_ms: i64,
    ) -> Member {
        let a = s
            .group_heartbeat(GroupHeartbeat {
                group_id: group.into(),
                member_id: String::new(),
                member_epoch: JOIN_GROUP_EPOCH,
                client_id: "test".into(),
                subscription: topics.iter().map(|t| t.to_string()).collect(),
                owned: vec![],
                session_timeout_ms: session_ms,
                assignor: None,
            })
            .await
            .unwrap();
        let mut m = Member {
            id: a.member_id,
            epoch: a.member_epoch,
            owned: vec![],
        };
        m.owned = a.assigned;
        m
    }

    async fn heartbeat(
        &mut self,
        s: &Arc<dyn MetadataStore>,
        group: &str,
        topics: &[&str],
        session_ms: i64,
    ) -> GroupAssignment {
        let a = s
            .group_heartbeat(GroupHeartbeat {
                group_id: group.into(),
                member_id: self.id.clone(),
                member_epoch: self.epoch,
                client_id: "test".into(),
                subscription: topics.iter().map(|t| t.to_string()).collect(),
                owned: self.owned.clone(),
                session_timeout_ms: session_ms,
                assignor: None,
            })
            .await
            .unwrap();
        self.epoch = a.member_epoch;
        self.owned = a.assigned.clone();
        a
    }
}

/// Heartbeats every member until nobody waits for a partition; checks after
/// every step that no partition has two owners.
async fn settle(s: &Arc<dyn MetadataStore>, group: &str, members: &mut [Member]) {
    for _ in 0..20 {
        let mut pending = 0;
        for i in 0..members.len() {
            let a = members[i].heartbeat(s, group, &["g"], 30_000).await;
            pending += a.pending.len();
            let mut all: Vec<_> = members
                .iter()
                .flat_map(|m| m.owned.iter().cloned())
                .collect();
            let n = all.len();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), n, "a partition has two owners");
        }
        if pending == 0 {
            return;
        }
    }
    panic!("group did not settle");
}

async fn a_group_asking_for_the_range_assignor_gets_contiguous_ranges(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("ranged", 5)).await.unwrap();
    let heartbeat =
        |member_id: &str, member_epoch: i32, owned: Vec<TopicPartition>| GroupHeartbeat {
            group_id: "ranges".into(),
            member_id: member_id.into(),
            member_epoch,
            client_id: "test".into(),
            subscription: vec!["ranged".into()],
            owned,
            session_timeout_ms: 30_000,
            assignor: (member_epoch == JOIN_GROUP_EPOCH).then(|| "range".to_string()),
        };
    let mut members: Vec<(String, i32, Vec<TopicPartition>)> = Vec::new();
    for id in ["m-a", "m-b"] {
        let a = s
            .group_heartbeat(heartbeat(id, JOIN_GROUP_EPOCH, vec![]))
            .await
            .unwrap();
        members.push((a.member_id, a.member_epoch, a.assigned));
    }
    // Heartbeat until every partition is handed over.
    for _ in 0..10 {
        for m in members.iter_mut() {
            let a = s
                .group_heartbeat(heartbeat(&m.0, m.1, m.2.clone()))
                .await
                .unwrap();
            (m.1, m.2) = (a.member_epoch, a.assigned);
        }
    }
    let partitions =
        |owned: &[TopicPartition]| -> Vec<u32> { owned.iter().map(|tp| tp.partition).collect() };
    assert_eq!(partitions(&members[0].2), [0, 1, 2]);
    assert_eq!(partitions(&members[1].2), [3, 4]);
    let d = s.describe_group("ranges").await.unwrap();
    assert!(d.members.iter().all(|m| m.assignor == "range"), "{d:?}");
    // An assignor the store does not have is refused.
    let mut bogus = heartbeat("m-c", JOIN_GROUP_EPOCH, vec![]);
    bogus.assignor = Some("sticky".into());
    assert!(matches!(
        s.group_heartbeat(bogus).await,
        Err(Error::InvalidArgument {
            field: "assignor",
            ..
        })
    ));
}

async fn group_assignment_is_balanced_incremental_and_exclusive(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("g", 12)).await.unwrap();
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Member::join(s, "grp", &["g"], 30_000).await);
    }
    settle(s, "grp", &mut members).await;
    assert!(members.iter().all(|m| m.owned.len() == 4), "balanced 4/4/4");

    // One leaves: the other two take its partitions and keep their own.
    let before: Vec<Vec<TopicPartition>> = members.iter().map(|m| m.owned.clone()).collect();
    let leaving = members.pop().unwrap();
    let left = s
        .group_heartbeat(GroupHeartbeat {
            group_id: "grp".into(),
            member_id: leaving.id.clone(),
            member_epoch: LEAVE_GROUP_EPOCH,
            client_id: "test".into(),
            subscription: vec!["g".into()],
            owned: vec![],
            session_timeout_ms: 30_000,
            assignor: None,
        })
        .await
        .unwrap();
    assert_eq!(left.member_epoch, LEAVE_GROUP_EPOCH);
    settle(s, "grp", &mut members).await;
    for (m, old) in members.iter().zip(&before) {
        assert_eq!(m.owned.len(), 6);
        assert!(old.iter().all(|tp| m.owned.contains(tp)), "sticky");
    }

    // One joins: it gets partitions only as the others release them.
    let newcomer = Member::join(s, "grp", &["g"], 30_000).await;
    assert!(
        newcomer.owned.is_empty(),
        "partitions still owned by others"
    );
    members.push(newcomer);
    settle(s, "grp", &mut members).await;
    assert!(members.iter().all(|m| m.owned.len() == 4));
    let d = s.describe_group("grp").await.unwrap();
    assert_eq!(d.members.len(), 3);
}

async fn expired_members_lose_their_partitions(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("g", 4)).await.unwrap();
    let mut alive = Member::join(s, "exp", &["g"], 30_000).await;
    let mut dying = Member::join(s, "exp", &["g"], 300).await;
    for _ in 0..3 {
        alive.heartbeat(s, "exp", &["g"], 30_000).await;
        dying.heartbeat(s, "exp", &["g"], 300).await;
    }
    assert_eq!((alive.owned.len(), dying.owned.len()), (2, 2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    alive.heartbeat(s, "exp", &["g"], 30_000).await;
    assert_eq!(
        alive.owned.len(),
        4,
        "the expired member's partitions moved"
    );
    let err = s
        .group_heartbeat(GroupHeartbeat {
            group_id: "exp".into(),
            member_id: dying.id.clone(),
            member_epoch: dying.epoch,
            client_id: "test".into(),
            subscription: vec!["g".into()],
            owned: dying.owned.clone(),
            session_timeout_ms: 300,
            assignor: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownMember { .. }), "{err}");
}

async fn group_offsets_are_fenced_by_member_epoch(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("g", 2)).await.unwrap();
    let mut m = Member::join(s, "fence", &["g"], 30_000).await;
    m.heartbeat(s, "fence", &["g"], 30_000).await;
    let commit = |offset| {
        vec![OffsetCommit {
            topic: "g".into(),
            partition: 0,
            offset,
            metadata: None,
        }]
    };
    s.commit_group_offsets("fence", Some((&m.id, m.epoch)), &commit(5))
        .await
        .unwrap();
    assert!(matches!(
        s.commit_group_offsets("fence", Some((&m.id, m.epoch - 1)), &commit(6))
            .await,
        Err(Error::FencedMemberEpoch { .. })
    ));
    assert!(matches!(
        s.commit_group_offsets("fence", Some(("ghost", 1)), &commit(6))
            .await,
        Err(Error::UnknownMember { .. })
    ));
    assert!(matches!(
        s.commit_group_offsets("fence", None, &commit(6)).await,
        Err(Error::GroupNotEmpty(_))
    ));
    let err = s
        .group_heartbeat(GroupHeartbeat {
            group_id: "fence".into(),
            member_id: m.id.clone(),
            member_epoch: m.epoch + 10,
            client_id: "test".into(),
            subscription: vec!["g".into()],
            owned: m.owned.clone(),
            session_timeout_ms: 30_000,
            assignor: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FencedMemberEpoch { .. }), "{err}");
    assert_eq!(
        s.fetch_offset("fence", "g", 0)
            .await
            .unwrap()
            .unwrap()
            .offset,
        5
    );
    // Once the group is empty, offsets can be set without a member.
    s.group_heartbeat(GroupHeartbeat {
        group_id: "fence".into(),
        member_id: m.id.clone(),
        member_epoch: LEAVE_GROUP_EPOCH,
        client_id: "test".into(),
        subscription: vec![],
        owned: vec![],
        session_timeout_ms: 30_000,
        assignor: None,
    })
    .await
    .unwrap();
    s.commit_group_offsets("fence", None, &commit(9))
        .await
        .unwrap();
    assert_eq!(
        s.fetch_offset("fence", "g", 0)
            .await
            .unwrap()
            .unwrap()
            .offset,
        9
    );
}

async fn groups_are_listed_described_and_deleted(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("g", 2)).await.unwrap();
    let m = Member::join(s, "live", &["g"], 30_000).await;
    s.commit_group_offsets(
        "offsets-only",
        None,
        &[OffsetCommit {
            topic: "g".into(),
            partition: 1,
            offset: 3,
            metadata: None,
        }],
    )
    .await
    .unwrap();
    let groups = s.list_groups().await.unwrap();
    assert_eq!(
        groups,
        [("live".to_string(), 1), ("offsets-only".to_string(), 0)]
    );
    let d = s.describe_group("live").await.unwrap();
    assert_eq!(d.members[0].member_id, m.id);
    assert_eq!(d.members[0].subscription, ["g"]);
    assert!(matches!(
        s.delete_group("live").await,
        Err(Error::GroupNotEmpty(_))
    ));
    s.delete_group("offsets-only").await.unwrap();
    assert!(matches!(
        s.describe_group("offsets-only").await,
        Err(Error::GroupNotFound(_))
    ));
    assert!(matches!(
        s.delete_group("nope").await,
        Err(Error::GroupNotFound(_))
    ));
}

/// A transactional batch (or a control marker with `marker`) chunk.
/// One commit writes more partitions and producer-partition pairs than
/// one statement of the commit names: idempotent, transactional and plain
/// batches in 300 partitions, two chunks for one partition, and a chunk
/// of a deleted topic; its retry is answered batch by batch.
async fn one_commit_over_hundreds_of_partitions_decides_each_on_its_own(b: &Backend) {
    const N: u32 = 300;
    let s = &b.store;
    let t = s.create_topic(topic("wide", N)).await.unwrap();
    let gone = s.create_topic(topic("wide-gone", 1)).await.unwrap();
    s.delete_topic("wide-gone").await.unwrap();
    let idem = s.init_producer_id(None).await.unwrap();
    let txn = s
        .init_transactional_producer("wide-app", 60_000)
        .await
        .unwrap();
    let commit = || {
        let mut chunks = Vec::new();
        for q in 0..N {
            let mut c = chunk(t.id, q, &[2, 1, 3]);
            c.batches[0].producer = Some(ProducerBatch {
                producer_id: idem.producer_id,
                epoch: idem.epoch,
                base_sequence: 0,
                record_count: 2,
                transactional: false,
            });
            c.batches[2].producer = Some(ProducerBatch {
                producer_id: txn.producer_id,
                epoch: txn.epoch,
                base_sequence: 0,
                record_count: 3,
                transactional: true,
            });
            chunks.push(c);
        }
        // A second chunk for partition 7 follows the first one.
        let mut again = chunk(t.id, 7, &[4]);
        again.batches[0].producer = Some(ProducerBatch {
            producer_id: idem.producer_id,
            epoch: idem.epoch,
            base_sequence: 2,
            record_count: 4,
            transactional: false,
        });
        chunks.push(again);
        chunks.push(chunk(gone.id, 0, &[1]));
        object(chunks)
    };
    let out = s.commit_object(&commit()).await.unwrap();
    for (q, o) in out[..N as usize].iter().enumerate() {
        let bases: Vec<i64> = o.as_ref().unwrap().iter().map(base).collect();
        assert_eq!(bases, [0, 2, 3], "partition {q}");
    }
    assert_eq!(
        out[N as usize].as_ref().unwrap(),
        &vec![BatchOutcome::Appended { base_offset: 6 }]
    );
    assert!(matches!(
        out[N as usize + 1],
        Err(ChunkRejected::PartitionGone { .. })
    ));
    for q in 0..N {
        let st = s.partition_state(t.id, q).await.unwrap();
        let next = if q == 7 { 10 } else { 6 };
        assert_eq!(
            (st.next_offset, st.last_stable_offset),
            (next, 3),
            "partition {q}: the open transaction holds the last stable offset"
        );
    }
    let open = s.open_transaction(txn.producer_id).await.unwrap().unwrap();
    assert_eq!(open.partitions.len(), N as usize);
    assert!(open.partitions.iter().all(|&(_, _, first)| first == 3));

    // The retry: every producer's batch is a duplicate with its offsets;
    // the plain batches are appended again.
    let out = s.commit_object(&commit()).await.unwrap();
    for (q, o) in out[..N as usize].iter().enumerate() {
        let next = if q == 7 { 10 } else { 6 };
        assert_eq!(
            o.as_ref().unwrap(),
            &vec![
                BatchOutcome::Duplicate { base_offset: 0 },
                BatchOutcome::Appended { base_offset: next },
                BatchOutcome::Duplicate { base_offset: 3 },
            ],
            "partition {q}"
        );
    }
    assert_eq!(
        out[N as usize].as_ref().unwrap(),
        &vec![BatchOutcome::Duplicate { base_offset: 6 }]
    );

    // The transaction ends with a marker in every partition.
    let all: Vec<u32> = (0..N).collect();
    s.end_transaction(&EndTransaction {
        producer_id: txn.producer_id,
        epoch: Some(txn.epoch),
        commit: true,
        markers: markers(t.id, &all),
        kind: EndKind::BumpEpoch,
    })
    .await
    .unwrap();
    for q in 0..N {
        let st = s.partition_state(t.id, q).await.unwrap();
        let next = if q == 7 { 12 } else { 8 };
        assert_eq!((st.next_offset, st.last_stable_offset), (next, next));
    }
}

fn txn_chunk(
    topic_id: TopicId,
    partition: u32,
    id: ProducerIdentity,
    seq: i32,
    n: i32,
) -> ChunkCommit {
    let mut c = chunk(topic_id, partition, &[n as i64]);
    c.batches[0].producer = Some(ProducerBatch {
        producer_id: id.producer_id,
        epoch: id.epoch,
        base_sequence: seq,
        record_count: n,
        transactional: true,
    });
    c
}

fn markers(topic_id: TopicId, partitions: &[u32]) -> Option<ObjectCommit> {
    Some(object(
        partitions
            .iter()
            .map(|&p| chunk(topic_id, p, &[1]))
            .collect(),
    ))
}

async fn transactions_commit_and_abort_with_markers_offsets_and_lso(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("tx", 2)).await.unwrap();
    let id = s
        .init_transactional_producer("app-1", 60_000)
        .await
        .unwrap();
    s.commit_object(&object(vec![chunk(t.id, 0, &[3])]))
        .await
        .unwrap();
    s.commit_object(&object(vec![txn_chunk(t.id, 0, id, 0, 2)]))
        .await
        .unwrap();
    // Records after an open transaction do not move the last stable offset.
    s.commit_object(&object(vec![chunk(t.id, 0, &[4])]))
        .await
        .unwrap();
    let st = s.partition_state(t.id, 0).await.unwrap();
    assert_eq!((st.next_offset, st.last_stable_offset), (9, 3));
    let open = s.open_transaction(id.producer_id).await.unwrap().unwrap();
    assert_eq!(open.partitions, [(t.id, 0, 3)]);
    s.add_transaction_offsets(
        id,
        "g",
        None,
        &[OffsetCommit {
            topic: "tx".into(),
            partition: 1,
            offset: 42,
            metadata: None,
        }],
    )
    .await
    .unwrap();
    assert!(
        s.fetch_offset("g", "tx", 1).await.unwrap().is_none(),
        "offsets wait for the commit"
    );
    // Markers must cover exactly the partitions written.
    let wrong = EndTransaction {
        producer_id: id.producer_id,
        epoch: Some(id.epoch),
        commit: true,
        markers: markers(t.id, &[0, 1]),
        kind: EndKind::BumpEpoch,
    };
    assert!(matches!(
        s.end_transaction(&wrong).await,
        Err(Error::TransactionPartitionsChanged(_))
    ));
    let end = EndTransaction {
        producer_id: id.producer_id,
        epoch: Some(id.epoch),
        commit: true,
        markers: markers(t.id, &[0]),
        kind: EndKind::BumpEpoch,
    };
    let next = s.end_transaction(&end).await.unwrap();
    assert_eq!(
        next.epoch,
        id.epoch + 1,
        "every transaction ends with a new epoch"
    );
    let st = s.partition_state(t.id, 0).await.unwrap();
    assert_eq!(
        (st.next_offset, st.last_stable_offset),
        (10, 10),
        "marker at 9"
    );
    assert_eq!(
        s.fetch_offset("g", "tx", 1).await.unwrap().unwrap().offset,
        42
    );
    assert!(s.open_transaction(id.producer_id).await.unwrap().is_none());

    // An aborted transaction: its range is recorded, its offsets dropped.
    s.commit_object(&object(vec![txn_chunk(t.id, 1, next, 0, 5)]))
        .await
        .unwrap();
    s.add_transaction_offsets(
        next,
        "g",
        None,
        &[OffsetCommit {
            topic: "tx".into(),
            partition: 1,
            offset: 99,
            metadata: None,
        }],
    )
    .await
    .unwrap();
    let abort = EndTransaction {
        producer_id: id.producer_id,
        epoch: Some(next.epoch),
        commit: false,
        markers: markers(t.id, &[1]),
        kind: EndKind::BumpEpoch,
    };
    s.end_transaction(&abort).await.unwrap();
    assert_eq!(
        s.aborted_transactions(t.id, 1, 0, 100).await.unwrap(),
        [AbortedTransaction {
            producer_id: id.producer_id,
            first_offset: 0,
            last_offset: 5
        }]
    );
    assert!(
        s.aborted_transactions(t.id, 1, 6, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.fetch_offset("g", "tx", 1).await.unwrap().unwrap().offset,
        42
    );
}

async fn ended_transactions_cannot_end_later_ones_and_zombies_are_fenced(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("tz", 1)).await.unwrap();
    let e0 = s
        .init_transactional_producer("app-2", 60_000)
        .await
        .unwrap();
    s.commit_object(&object(vec![txn_chunk(t.id, 0, e0, 0, 1)]))
        .await
        .unwrap();
    let end0 = EndTransaction {
        producer_id: e0.producer_id,
        epoch: Some(e0.epoch),
        commit: true,
        markers: markers(t.id, &[0]),
        kind: EndKind::BumpEpoch,
    };
    let e1 = s.end_transaction(&end0).await.unwrap();
    // The next transaction is open...
    s.commit_object(&object(vec![txn_chunk(t.id, 0, e1, 0, 1)]))
        .await
        .unwrap();
    // ...and a delayed copy of the first end changes nothing.
    assert_eq!(s.end_transaction(&end0).await.unwrap(), e1);
    let as_abort = EndTransaction {
        commit: false,
        ..end0.clone()
    };
    assert!(matches!(
        s.end_transaction(&as_abort).await,
        Err(Error::ProducerFenced { .. })
    ));
    assert_eq!(
        s.open_transaction(e0.producer_id)
            .await
            .unwrap()
            .unwrap()
            .epoch,
        e1.epoch
    );

    // A new instance cannot start while the old transaction is open; once
    // it is aborted (by the coordinator), the new instance fences the old.
    assert!(matches!(
        s.init_transactional_producer("app-2", 60_000).await,
        Err(Error::InvalidTransactionState { .. })
    ));
    let coordinator_abort = EndTransaction {
        producer_id: e0.producer_id,
        epoch: None,
        commit: false,
        markers: markers(t.id, &[0]),
        kind: EndKind::BumpEpoch,
    };
    s.end_transaction(&coordinator_abort).await.unwrap();
    let fresh = s
        .init_transactional_producer("app-2", 60_000)
        .await
        .unwrap();
    assert_eq!(fresh.producer_id, e0.producer_id);
    assert!(fresh.epoch > e1.epoch);
    let zombie = s
        .commit_object(&object(vec![txn_chunk(t.id, 0, e1, 1, 1)]))
        .await
        .unwrap();
    assert!(matches!(
        zombie[0].as_ref().unwrap()[0],
        BatchOutcome::Rejected(BatchRejected::ProducerFenced { .. })
    ));
    assert!(matches!(
        s.add_transaction_offsets(e1, "g", None, &[]).await,
        Err(Error::ProducerFenced { .. })
    ));
    let zombie_end = EndTransaction {
        producer_id: e1.producer_id,
        epoch: Some(e1.epoch),
        commit: true,
        markers: None,
        kind: EndKind::BumpEpoch,
    };
    assert!(matches!(
        s.end_transaction(&zombie_end).await,
        Err(Error::ProducerFenced { .. })
    ));
}

async fn ends_keeping_the_epoch_end_only_the_transaction_they_name(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("keep", 1)).await.unwrap();
    let tid = format!("keep-{}", unique());
    let id = s.init_transactional_producer(&tid, 60_000).await.unwrap();
    let listed = |l: Vec<TransactionListing>| l.into_iter().next().unwrap();
    let ids = [tid.clone()];
    let state = listed(s.transactions(Some(&ids)).await.unwrap());
    assert_eq!(
        (state.state, state.producer_id),
        (TransactionState::Empty, id.producer_id)
    );

    // Kafka's AddPartitionsToTxn opens the transaction before it writes.
    s.begin_transaction(id).await.unwrap();
    let appended = s
        .commit_object(&object(vec![txn_chunk(t.id, 0, id, 0, 2)]))
        .await
        .unwrap();
    assert_eq!(base(&appended[0].as_ref().unwrap()[0]), 0);
    let first = s.open_transaction(id.producer_id).await.unwrap().unwrap();
    let state = listed(s.transactions(Some(&ids)).await.unwrap());
    assert_eq!(state.state, TransactionState::Ongoing);
    assert_eq!(state.started_at_ms, Some(first.started_at_ms));
    assert_eq!(state.partitions, [TopicPartition::new("keep", 0)]);
    let producers = s.partition_producers(t.id, 0).await.unwrap();
    assert_eq!(producers.len(), 1);
    assert_eq!(
        (
            producers[0].last_sequence,
            producers[0].transaction_start_offset
        ),
        (1, Some(0))
    );

    let end = |started_at_ms, commit, markers| EndTransaction {
        producer_id: id.producer_id,
        epoch: Some(id.epoch),
        commit,
        markers,
        kind: EndKind::KeepEpoch { started_at_ms },
    };
    let commit_first = end(Some(first.started_at_ms), true, markers(t.id, &[0]));
    assert_eq!(
        s.end_transaction(&commit_first).await.unwrap(),
        id,
        "the epoch stays"
    );
    let state = listed(s.transactions(Some(&ids)).await.unwrap());
    assert_eq!(state.state, TransactionState::CompleteCommit);
    // A retry of that end is answered and changes nothing.
    assert_eq!(s.end_transaction(&commit_first).await.unwrap(), id);
    assert_eq!(s.partition_state(t.id, 0).await.unwrap().next_offset, 3);

    // The next transaction continues the sequences of the same epoch.
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.begin_transaction(id).await.unwrap();
    let appended = s
        .commit_object(&object(vec![txn_chunk(t.id, 0, id, 2, 3)]))
        .await
        .unwrap();
    assert_eq!(base(&appended[0].as_ref().unwrap()[0]), 3);
    let second = s.open_transaction(id.producer_id).await.unwrap().unwrap();
    assert!(second.started_at_ms > first.started_at_ms);
    // A late end of the first transaction never ends the second one.
    assert_eq!(s.end_transaction(&commit_first).await.unwrap(), id);
    let late_abort = end(Some(first.started_at_ms), false, markers(t.id, &[0]));
    assert!(matches!(
        s.end_transaction(&late_abort).await,
        Err(Error::InvalidTransactionState { .. })
    ));
    assert!(s.open_transaction(id.producer_id).await.unwrap().is_some());
    let abort_second = end(Some(second.started_at_ms), false, markers(t.id, &[0]));
    assert_eq!(s.end_transaction(&abort_second).await.unwrap(), id);
    let aborted = s.aborted_transactions(t.id, 0, 0, 100).await.unwrap();
    assert_eq!(
        aborted
            .iter()
            .map(|a| (a.first_offset, a.last_offset))
            .collect::<Vec<_>>(),
        [(3, 6)]
    );
    assert_eq!(
        listed(s.transactions(Some(&ids)).await.unwrap()).state,
        TransactionState::CompleteAbort
    );
    // Nothing open and not a repeat of the last end.
    assert!(matches!(
        s.end_transaction(&end(None, true, None)).await,
        Err(Error::InvalidTransactionState { .. })
    ));

    // A new instance fences the old one on begin and end.
    let next = s.init_transactional_producer(&tid, 60_000).await.unwrap();
    assert_eq!(next.epoch, id.epoch + 1);
    assert!(matches!(
        s.begin_transaction(id).await,
        Err(Error::ProducerFenced { .. })
    ));
    assert!(matches!(
        s.end_transaction(&commit_first).await,
        Err(Error::ProducerFenced { .. })
    ));
    let idempotent = s.init_producer_id(None).await.unwrap();
    assert!(matches!(
        s.begin_transaction(idempotent).await,
        Err(Error::InvalidTransactionState { .. })
    ));
}

async fn expired_transactions_are_found_and_aborted(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("te", 1)).await.unwrap();
    let id = s.init_transactional_producer("app-3", 200).await.unwrap();
    s.commit_object(&object(vec![txn_chunk(t.id, 0, id, 0, 1)]))
        .await
        .unwrap();
    assert!(s.expired_transactions().await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.expired_transactions().await.unwrap(), [id.producer_id]);
    let abort = EndTransaction {
        producer_id: id.producer_id,
        epoch: None,
        commit: false,
        markers: markers(t.id, &[0]),
        kind: EndKind::BumpEpoch,
    };
    s.end_transaction(&abort).await.unwrap();
    assert!(s.expired_transactions().await.unwrap().is_empty());
    let st = s.partition_state(t.id, 0).await.unwrap();
    assert_eq!(st.last_stable_offset, st.next_offset);
}

async fn job_leases_are_exclusive_and_expire(b: &Backend) {
    let s = &b.store;
    assert!(s.try_lease("gc", "agent-a", 300).await.unwrap());
    assert!(
        !s.try_lease("gc", "agent-b", 300).await.unwrap(),
        "held by a"
    );
    assert!(
        s.try_lease("gc", "agent-a", 300).await.unwrap(),
        "renewed by its holder"
    );
    assert!(
        s.try_lease("retention", "agent-b", 300).await.unwrap(),
        "another job"
    );
    assert_eq!(
        s.lease_holder("gc").await.unwrap().as_deref(),
        Some("agent-a")
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(s.lease_holder("gc").await.unwrap(), None, "expired");
    assert!(
        s.try_lease("gc", "agent-b", 300).await.unwrap(),
        "taken over"
    );
    assert!(!s.try_lease("gc", "agent-a", 300).await.unwrap());
}

fn stamped(topic_id: TopicId, partition: u32, n: i64, bytes: u64, max_ts: i64) -> ChunkCommit {
    let mut c = chunk(topic_id, partition, &[n]);
    c.batches[0].byte_length = bytes;
    c.batches[0].max_timestamp = max_ts;
    c.batches[0].min_timestamp = max_ts;
    c
}

async fn retention_drops_old_segments_and_advances_log_start(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("ret", 1)).await.unwrap();
    // Five segments of 10 offsets and 100 bytes, timestamps 1000..5000.
    for i in 1..=5 {
        s.commit_object(&object(vec![stamped(t.id, 0, 10, 100, i * 1000)]))
            .await
            .unwrap();
    }
    // By time: segments wholly older than 2500.
    assert_eq!(
        s.apply_retention(t.id, 0, Some(2500), None).await.unwrap(),
        (2, 20)
    );
    let st = s.partition_state(t.id, 0).await.unwrap();
    assert_eq!((st.log_start_offset, st.next_offset), (20, 50));
    assert_eq!(s.segments(t.id, 0, 0, 10).await.unwrap()[0].base_offset, 20);
    // By size: keep at most 150 bytes -> one segment left.
    assert_eq!(
        s.apply_retention(t.id, 0, None, Some(150)).await.unwrap(),
        (2, 40)
    );
    assert_eq!(
        s.apply_retention(t.id, 0, Some(0), Some(1000))
            .await
            .unwrap(),
        (0, 40)
    );
    // Never past an open transaction.
    let id = s
        .init_transactional_producer("ret-tx", 60_000)
        .await
        .unwrap();
    s.commit_object(&object(vec![txn_chunk(t.id, 0, id, 0, 1)]))
        .await
        .unwrap();
    s.commit_object(&object(vec![stamped(t.id, 0, 10, 100, 1)]))
        .await
        .unwrap();
    assert_eq!(
        s.apply_retention(t.id, 0, Some(i64::MAX), None)
            .await
            .unwrap(),
        (1, 50)
    );
    let usage = s.partition_usage(t.id).await.unwrap();
    assert_eq!(
        usage,
        [PartitionUsage {
            partition: 0,
            segments: 2,
            bytes: 200
        }]
    );
}

async fn log_start_advances_to_an_offset_monotonically_up_to_the_last_stable_offset(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("delrec", 1)).await.unwrap();
    // Three segments: 0..=9, 10..=19, 20..=29.
    for i in 1..=3 {
        s.commit_object(&object(vec![stamped(t.id, 0, 10, 100, i)]))
            .await
            .unwrap();
    }
    // Inside a segment: the segments wholly below go, the one holding the
    // new log start stays.
    assert_eq!(s.advance_log_start(t.id, 0, Some(15)).await.unwrap(), 15);
    let st = s.partition_state(t.id, 0).await.unwrap();
    assert_eq!((st.log_start_offset, st.next_offset), (15, 30));
    let kept: Vec<i64> = s
        .segments(t.id, 0, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|g| g.base_offset)
        .collect();
    assert_eq!(kept, [10, 20]);
    // Never back.
    assert_eq!(s.advance_log_start(t.id, 0, Some(5)).await.unwrap(), 15);
    assert_eq!(
        s.partition_state(t.id, 0).await.unwrap().log_start_offset,
        15
    );
    // Past the high watermark: refused, nothing changes.
    assert!(matches!(
        s.advance_log_start(t.id, 0, Some(31)).await,
        Err(Error::LogStartOutOfRange {
            offset: 31,
            last_stable_offset: 30,
            high_watermark: 30,
            ..
        })
    ));
    assert!(matches!(
        s.advance_log_start(t.id, 0, Some(-2)).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        s.advance_log_start(t.id, 1, Some(1)).await,
        Err(Error::PartitionIdNotFound { partition: 1, .. })
    ));
    assert_eq!(
        s.partition_state(t.id, 0).await.unwrap().log_start_offset,
        15
    );
    // To the high watermark: every segment goes.
    assert_eq!(s.advance_log_start(t.id, 0, None).await.unwrap(), 30);
    assert!(s.segments(t.id, 0, 0, 10).await.unwrap().is_empty());
    assert!(s.partition_usage(t.id).await.unwrap().is_empty());
    // An open transaction from offset 30: the last stable offset is the
    // limit, and `None` goes only that far.
    let id = s
        .init_transactional_producer("delrec-tx", 60_000)
        .await
        .unwrap();
    s.commit_object(&object(vec![txn_chunk(t.id, 0, id, 0, 1)]))
        .await
        .unwrap();
    s.commit_object(&object(vec![stamped(t.id, 0, 10, 100, 4)]))
        .await
        .unwrap();
    assert_eq!(s.advance_log_start(t.id, 0, None).await.unwrap(), 30);
    assert!(matches!(
        s.advance_log_start(t.id, 0, Some(35)).await,
        Err(Error::LogStartOutOfRange {
            offset: 35,
            last_stable_offset: 30,
            high_watermark: 41,
            ..
        })
    ));
    let st = s.partition_state(t.id, 0).await.unwrap();
    assert_eq!((st.log_start_offset, st.next_offset), (30, 41));
    assert_eq!(s.segments(t.id, 0, 30, 10).await.unwrap().len(), 2);
}

async fn segments_are_replaced_atomically_and_objects_tracked(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("cmp", 1)).await.unwrap();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let o = object(vec![chunk(t.id, 0, &[5])]);
        keys.push(o.object_key.clone());
        s.commit_object(&o).await.unwrap();
    }
    let old = s.segments(t.id, 0, 0, 10).await.unwrap();
    assert_eq!(s.referenced_objects(&keys).await.unwrap().len(), 3);
    let merged = Segment {
        topic_id: t.id,
        partition: 0,
        base_offset: 0,
        last_offset: 14,
        record_count: 15,
        object_key: format!("objects/{}.sho", unique()),
        object_size: 1500,
        byte_start: 0,
        byte_length: 1500,
        min_timestamp: 1000,
        max_timestamp: 2000,
    };
    assert!(s.replace_segments(&old, &merged).await.unwrap());
    let now = s.segments(t.id, 0, 0, 10).await.unwrap();
    assert_eq!(now, std::slice::from_ref(&merged));
    // The old segments are gone: a second replacement is refused.
    assert!(!s.replace_segments(&old, &merged).await.unwrap());
    assert!(s.referenced_objects(&keys).await.unwrap().is_empty());
    s.forget_objects(&keys).await.unwrap();
    s.forget_objects(std::slice::from_ref(&merged.object_key))
        .await
        .unwrap();
    assert_eq!(
        s.segments(t.id, 0, 7, 10).await.unwrap(),
        [merged],
        "referenced objects stay"
    );
}

async fn objects_are_claimed_only_unreferenced_and_claims_fence_commits(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("claims", 1)).await.unwrap();
    let live = object(vec![stamped(t.id, 0, 10, 100, 1)]);
    s.commit_object(&live).await.unwrap();
    // An upload whose commit has not arrived yet: the GC claims its key.
    let stalled = object(vec![chunk(t.id, 0, &[5])]);
    let listed = [
        (live.object_key.clone(), 1_000),
        (stalled.object_key.clone(), 1_000),
    ];
    assert_eq!(
        s.claim_objects(&listed).await.unwrap(),
        std::slice::from_ref(&stalled.object_key),
        "a referenced object is never claimed"
    );
    // The stalled commit arrives after the claim: it fails, and nothing of
    // it is visible.
    assert!(s.commit_object(&stalled).await.is_err());
    assert_eq!(s.partition_state(t.id, 0).await.unwrap().next_offset, 10);
    // After the object is deleted and forgotten, the claim still fences
    // the key; claiming again is idempotent.
    s.forget_objects(std::slice::from_ref(&stalled.object_key))
        .await
        .unwrap();
    assert!(s.commit_object(&stalled).await.is_err());
    assert_eq!(
        s.claim_objects(&listed[1..]).await.unwrap(),
        std::slice::from_ref(&stalled.object_key)
    );
    assert_eq!(s.partition_state(t.id, 0).await.unwrap().next_offset, 10);
    // A committed object is claimed once retention dropped its segments,
    // and forgotten for good (no commit of its key can come again).
    assert!(s.claim_objects(&listed[..1]).await.unwrap().is_empty());
    s.apply_retention(t.id, 0, Some(i64::MAX), None)
        .await
        .unwrap();
    assert_eq!(
        s.claim_objects(&listed[..1]).await.unwrap(),
        std::slice::from_ref(&live.object_key)
    );
    s.forget_objects(std::slice::from_ref(&live.object_key))
        .await
        .unwrap();
    assert!(s.claim_objects(&[]).await.unwrap().is_empty());
    // Commits of new objects go on.
    s.commit_object(&object(vec![chunk(t.id, 0, &[2])]))
        .await
        .unwrap();
    assert_eq!(s.partition_state(t.id, 0).await.unwrap().next_offset, 12);
}

async fn topics_are_altered(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("alt", 2)).await.unwrap();
    let altered = s
        .alter_topic(
            "alt",
            TopicAlter {
                partition_count: Some(5),
                retention_ms: Some(None),
                set_config: HashMap::from([(CLEANUP_POLICY.to_string(), "compact".to_string())]),
                remove_config: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!((altered.partition_count, altered.retention_ms), (5, None));
    assert_eq!(s.partition_state(t.id, 4).await.unwrap().next_offset, 0);
    assert_eq!(s.get_topic("alt").await.unwrap().unwrap(), altered);
    let err = s
        .alter_topic(
            "alt",
            TopicAlter {
                partition_count: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("can only be added"), "{err}");
    let err = s
        .alter_topic(
            "alt",
            TopicAlter {
                set_config: HashMap::from([("bogus".into(), "1".into())]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(matches!(
        s.alter_topic("nope", TopicAlter::default()).await,
        Err(Error::TopicNotFound(_))
    ));
}

/// KIP-360: the answer to an epoch bump can be lost; the producer sends the
/// same bump again and must get the bumped identity, not be fenced.
async fn a_retried_epoch_bump_gets_the_bumped_identity(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("kip360", 1)).await.unwrap();
    let p0 = s.init_producer_id(None).await.unwrap();
    let p1 = s.init_producer_id(Some(p0)).await.unwrap();
    assert_eq!((p1.producer_id, p1.epoch), (p0.producer_id, p0.epoch + 1));
    // The retries (through another store, as a retry reaching another
    // agent would) get the same identity and bump nothing.
    let other = b.open_again().await;
    assert_eq!(other.init_producer_id(Some(p0)).await.unwrap(), p1);
    assert_eq!(s.init_producer_id(Some(p0)).await.unwrap(), p1);
    // Epoch 1 is current: its batches commit.
    let c = object(vec![producer_chunk(t.id, p1.producer_id, &[(1, 0, 1)])]);
    let out = s.commit_object(&c).await.unwrap();
    assert_eq!(base(&out[0].as_ref().unwrap()[0]), 0);
    // Once the epoch moved on, the old bump is fenced for good.
    let p2 = s.init_producer_id(Some(p1)).await.unwrap();
    assert_eq!(p2.epoch, 2);
    assert!(matches!(
        s.init_producer_id(Some(p0)).await,
        Err(Error::ProducerFenced {
            epoch: 0,
            current_epoch: 2,
            ..
        })
    ));
    assert_eq!(s.init_producer_id(Some(p1)).await.unwrap(), p2);
    // An epoch reached by a transaction end, not by a bump, is no retry.
    let tp = s
        .init_transactional_producer("kip360-txn", 60_000)
        .await
        .unwrap();
    let next = s
        .end_transaction(&EndTransaction {
            producer_id: tp.producer_id,
            epoch: Some(tp.epoch),
            commit: true,
            markers: None,
            kind: EndKind::BumpEpoch,
        })
        .await
        .unwrap();
    assert_eq!(next.epoch, tp.epoch + 1);
    assert!(matches!(
        s.init_producer_id(Some(tp)).await,
        Err(Error::ProducerFenced { .. })
    ));
}

async fn a_resent_request_of_any_number_of_batches_appends_nothing(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("resend", 1)).await.unwrap();
    let p = s.init_producer_id(None).await.unwrap();
    let n = PRODUCER_BATCHES_REMEMBERED + 4;
    let batches: Vec<_> = (0..n as i32).map(|i| (p.epoch, i * 2, 2)).collect();
    let request = || object(vec![producer_chunk(t.id, p.producer_id, &batches)]);
    let first = s.commit_object(&request()).await.unwrap();
    let offsets: Vec<i64> = first[0].as_ref().unwrap().iter().map(base).collect();
    assert_eq!(offsets, (0..n as i64).map(|i| i * 2).collect::<Vec<_>>());
    // The answer was lost: the same request again appends nothing. The
    // remembered batches get their offsets; the older ones are known to
    // be committed, without offsets.
    let again = s.commit_object(&request()).await.unwrap();
    let again = again[0].as_ref().unwrap();
    for (i, outcome) in again.iter().enumerate() {
        if i < n - PRODUCER_BATCHES_REMEMBERED {
            assert!(
                matches!(
                    outcome,
                    BatchOutcome::Rejected(BatchRejected::AlreadyCommitted { .. })
                ),
                "batch {i}: {outcome:?}"
            );
        } else {
            assert_eq!(
                outcome,
                &BatchOutcome::Duplicate {
                    base_offset: offsets[i]
                },
                "batch {i}"
            );
        }
    }
    let state = s.partition_state(t.id, 0).await.unwrap();
    assert_eq!(state.next_offset, 2 * n as i64, "nothing appended");
    // Still so once the epoch is bumped, as long as the new epoch has
    // written nothing to the partition; the sequence goes on after them.
    let bumped = s.init_producer_id(Some(p)).await.unwrap();
    let late = s.commit_object(&request()).await.unwrap();
    assert!(late[0].as_ref().unwrap().iter().all(|o| matches!(
        o,
        BatchOutcome::Duplicate { .. }
            | BatchOutcome::Rejected(BatchRejected::AlreadyCommitted { .. })
    )));
    let next = s
        .commit_object(&object(vec![producer_chunk(
            t.id,
            p.producer_id,
            &[(bumped.epoch, 0, 1)],
        )]))
        .await
        .unwrap();
    assert_eq!(base(&next[0].as_ref().unwrap()[0]), 2 * n as i64);
}

async fn a_commit_in_doubt_is_settled(b: &Backend) {
    let s = &b.store;
    let t = s.create_topic(topic("settle", 2)).await.unwrap();
    let commit = object(vec![chunk(t.id, 0, &[3, 2]), chunk(t.id, 1, &[4])]);
    s.commit_object(&commit).await.unwrap();
    let segments = s.settle_object(&commit.object_key).await.unwrap().unwrap();
    assert_eq!(
        segments
            .iter()
            .map(|g| (g.partition, g.base_offset, g.last_offset, g.byte_start))
            .collect::<Vec<_>>(),
        [(0, 0, 4, 0), (1, 0, 3, 0)]
    );
    // Never committed: settling records nothing, and tells so every time.
    let missing = object(vec![chunk(t.id, 0, &[1])]);
    assert_eq!(s.settle_object(&missing.object_key).await.unwrap(), None);
    assert_eq!(s.settle_object(&missing.object_key).await.unwrap(), None);
    // A settled key can still be committed (nothing of it was kept).
    s.commit_object(&missing).await.unwrap();
    assert_eq!(
        s.settle_object(&missing.object_key)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    // A key the object GC claimed before any commit: not committed, and no
    // commit of it can happen any more.
    let claimed = object(vec![chunk(t.id, 1, &[1])]);
    let key = claimed.object_key.clone();
    let claims = s.claim_objects(&[(key.clone(), 10)]).await.unwrap();
    assert_eq!(claims, [key.as_str()]);
    assert_eq!(s.settle_object(&key).await.unwrap(), None);
    assert!(s.commit_object(&claimed).await.is_err());
}

/// A transactional producer writes to partition 0; then, at once, it
/// writes to partition 1 (from one store instance) while its transaction
/// is aborted (from another, as a timeout job or a fencing instance
/// would). Either the write is fenced, or the abort covers it: its
/// records are never left outside the aborted transaction.
async fn an_abort_racing_a_commit_to_a_new_partition_covers_it(b: &Backend) {
    let s = &b.store;
    let other = b.open_again().await;
    let t = s.create_topic(topic("race", 2)).await.unwrap();
    for round in 0..40 {
        let id = s
            .init_transactional_producer(&format!("racer-{round}"), 60_000)
            .await
            .unwrap();
        s.commit_object(&object(vec![txn_chunk(t.id, 0, id, 0, 1)]))
            .await
            .unwrap();
        let write = {
            let s = s.clone();
            tokio::spawn(async move {
                s.commit_object(&object(vec![txn_chunk(t.id, 1, id, 0, 1)]))
                    .await
                    .unwrap()
            })
        };
        let abort = {
            let other = other.clone();
            tokio::spawn(async move {
                // As the abort job: markers for the partitions it sees,
                // again if they changed meanwhile.
                loop {
                    let Some(open) = other.open_transaction(id.producer_id).await.unwrap() else {
                        return;
                    };
                    let partitions: Vec<u32> = open.partitions.iter().map(|p| p.1).collect();
                    let end = EndTransaction {
                        producer_id: id.producer_id,
                        epoch: None,
                        commit: false,
                        markers: markers(t.id, &partitions),
                        kind: EndKind::BumpEpoch,
                    };
                    match other.end_transaction(&end).await {
                        Ok(_) => return,
                        Err(e) if e.is_retryable() => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        };
        let written = write.await.unwrap();
        abort.await.unwrap();
        match &written[0].as_ref().unwrap()[0] {
            BatchOutcome::Rejected(BatchRejected::ProducerFenced { .. }) => {}
            BatchOutcome::Appended { base_offset } => {
                let aborted = s.aborted_transactions(t.id, 1, 0, i64::MAX).await.unwrap();
                assert!(
                    aborted.iter().any(|a| a.producer_id == id.producer_id
                        && a.first_offset <= *base_offset
                        && *base_offset < a.last_offset),
                    "round {round}: the write at {base_offset} escaped the abort: {aborted:?}"
                );
            }
            other => panic!("round {round}: {other:?}"),
        }
        assert!(
            s.open_transaction(id.producer_id).await.unwrap().is_none(),
            "round {round}: a transaction was left open"
        );
    }
}

fn owned_by(d: &GroupDescription, member: &str) -> Vec<TopicPartition> {
    d.members
        .iter()
        .find(|m| m.member_id == member)
        .map(|m| m.owned.clone())
        .unwrap_or_default()
}

/// A heartbeat delayed in the network, carrying an older member epoch and
/// partitions since released, must not give them back to their old owner.
async fn a_delayed_heartbeat_with_an_older_epoch_changes_nothing(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("g", 2)).await.unwrap();
    let mut a = Member::join(s, "late", &["g"], 30_000).await;
    assert_eq!(a.owned.len(), 2);
    let delayed = GroupHeartbeat {
        group_id: "late".into(),
        member_id: a.id.clone(),
        member_epoch: a.epoch,
        client_id: "test".into(),
        subscription: vec!["g".into()],
        owned: a.owned.clone(),
        session_timeout_ms: 30_000,
        assignor: None,
    };
    let mut bm = Member::join(s, "late", &["g"], 30_000).await;
    // `a` learns its smaller share (a new epoch), releases, `b` takes it.
    let old_epoch = a.epoch;
    a.heartbeat(s, "late", &["g"], 30_000).await;
    assert!(a.epoch > old_epoch);
    assert_eq!(a.owned.len(), 1);
    a.heartbeat(s, "late", &["g"], 30_000).await;
    bm.heartbeat(s, "late", &["g"], 30_000).await;
    assert_eq!(bm.owned.len(), 1);
    let before = s.describe_group("late").await.unwrap();
    assert_eq!(owned_by(&before, &a.id), a.owned);

    let err = s.group_heartbeat(delayed).await.unwrap_err();
    assert!(
        matches!(err, Error::FencedMemberEpoch { epoch, current, .. }
            if epoch == old_epoch && current == a.epoch),
        "{err}"
    );
    let after = s.describe_group("late").await.unwrap();
    assert_eq!(
        owned_by(&after, &a.id),
        a.owned,
        "owned partitions unchanged"
    );
    assert_eq!(owned_by(&after, &bm.id), bm.owned);
    // `a` carries on at its current epoch.
    a.heartbeat(s, "late", &["g"], 30_000).await;
    assert_eq!(a.owned.len(), 1);
}

async fn offsets_are_committed_only_by_the_partitions_owner(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("g", 2)).await.unwrap();
    let commit = |tp: &TopicPartition, offset| {
        vec![OffsetCommit {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset,
            metadata: None,
        }]
    };
    let mut a = Member::join(s, "own", &["g"], 30_000).await;
    let bm = Member::join(s, "own", &["g"], 30_000).await;
    // `a` is told to give one partition up: until it reports the release it
    // still owns it, and commits it (as a consumer does on revocation).
    a.heartbeat(s, "own", &["g"], 30_000).await;
    let mine = a.owned[0].clone();
    let revoked = TopicPartition::new("g", 1 - mine.partition);
    s.commit_group_offsets("own", Some((&a.id, a.epoch)), &commit(&revoked, 4))
        .await
        .unwrap();
    settle(s, "own", &mut [a, bm]).await;
    let d = s.describe_group("own").await.unwrap();
    let (a_id, b_id) = (
        d.members[0].member_id.clone(),
        d.members[1].member_id.clone(),
    );
    let (a_tp, b_tp) = (
        owned_by(&d, &a_id)[0].clone(),
        owned_by(&d, &b_id)[0].clone(),
    );
    let a_epoch = d.members[0].member_epoch;

    s.commit_group_offsets("own", Some((&a_id, a_epoch)), &commit(&a_tp, 7))
        .await
        .unwrap();
    // The other member's partition, alone or with its own: refused whole.
    for offsets in [
        commit(&b_tp, 9),
        [commit(&a_tp, 9), commit(&b_tp, 9)].concat(),
    ] {
        let err = s
            .commit_group_offsets("own", Some((&a_id, a_epoch)), &offsets)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::NotPartitionOwner { member_id, topic, partition, .. }
                if *member_id == a_id && *topic == b_tp.topic && *partition == b_tp.partition),
            "{err}"
        );
    }
    // The same through a transaction.
    let p = s
        .init_transactional_producer("own-txn", 60_000)
        .await
        .unwrap();
    let err = s
        .add_transaction_offsets(p, "own", Some((&a_id, a_epoch)), &commit(&b_tp, 9))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotPartitionOwner { .. }), "{err}");
    let offsets: BTreeMap<u32, i64> = s
        .fetch_offsets("own")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    assert_eq!(offsets[&a_tp.partition], 7);
    if revoked == b_tp {
        assert_eq!(offsets[&b_tp.partition], 4);
    }
}

/// `delete_group` racing a member's join: either the delete comes first
/// (and the member is in the new group) or it is refused; never both
/// succeed with the member gone.
async fn a_group_is_never_deleted_under_a_joining_member(b: &Backend) {
    let s = &b.store;
    let other = b.open_again().await;
    s.create_topic(topic("g", 1)).await.unwrap();
    for i in 0..40 {
        let group = format!("race-{i}");
        s.commit_group_offsets(
            &group,
            None,
            &[OffsetCommit {
                topic: "g".into(),
                partition: 0,
                offset: 1,
                metadata: None,
            }],
        )
        .await
        .unwrap();
        let (deleted, joined) = tokio::join!(
            s.delete_group(&group),
            other.group_heartbeat(GroupHeartbeat {
                group_id: group.clone(),
                member_id: String::new(),
                member_epoch: JOIN_GROUP_EPOCH,
                client_id: "test".into(),
                subscription: vec!["g".into()],
                owned: vec![],
                session_timeout_ms: 30_000,
                assignor: None,
            })
        );
        let joined = joined.unwrap();
        match deleted {
            Ok(()) => {
                let d = s.describe_group(&group).await.unwrap();
                assert_eq!(
                    d.members.iter().map(|m| &m.member_id).collect::<Vec<_>>(),
                    [&joined.member_id],
                    "group {group} was deleted under its member"
                );
                assert!(d.offsets.is_empty());
            }
            Err(Error::GroupNotEmpty(_)) => {
                assert_eq!(s.fetch_offsets(&group).await.unwrap().len(), 1);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

async fn added_partitions_and_created_topics_are_assigned_at_once(b: &Backend) {
    let s = &b.store;
    s.create_topic(topic("a", 2)).await.unwrap();
    let mut m = Member::join(s, "grow", &["a", "b"], 30_000).await;
    assert_eq!(m.owned.len(), 2);
    let epoch = m.epoch;
    m.heartbeat(s, "grow", &["a", "b"], 30_000).await;
    assert_eq!((m.owned.len(), m.epoch), (2, epoch));

    s.alter_topic(
        "a",
        TopicAlter {
            partition_count: Some(4),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let answer = m.heartbeat(s, "grow", &["a", "b"], 30_000).await;
    assert_eq!(m.owned.len(), 4, "{answer:?}");
    assert!(m.epoch > epoch, "a new assignment, a new epoch");
    assert!(answer.pending.is_empty());

    // A subscribed topic that did not exist when the member joined.
    s.create_topic(topic("b", 3)).await.unwrap();
    m.heartbeat(s, "grow", &["a", "b"], 30_000).await;
    assert_eq!(m.owned.len(), 7);
    assert_eq!(
        m.owned.iter().filter(|tp| tp.topic == "b").count(),
        3,
        "{:?}",
        m.owned
    );
    // Shared between two members once another joins.
    let other = Member::join(s, "grow", &["a", "b"], 30_000).await;
    let mut members = [m, other];
    for _ in 0..5 {
        for x in members.iter_mut() {
            x.heartbeat(s, "grow", &["a", "b"], 30_000).await;
        }
    }
    let [_, mut other] = members;
    assert!(other.owned.len() >= 3, "{:?}", other.owned);
    // A deleted topic's partitions leave the assignment.
    s.delete_topic("b").await.unwrap();
    other.heartbeat(s, "grow", &["a", "b"], 30_000).await;
    assert!(
        other.owned.iter().all(|tp| tp.topic == "a"),
        "{:?}",
        other.owned
    );
}
