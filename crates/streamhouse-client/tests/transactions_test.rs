//! Transactions through the public API: read_committed isolation, zombie
//! fencing, timeouts, and offsets committed with a transaction.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::TestCluster;
use streamhouse_client::{
    AutoOffsetReset, Consumer, ConsumerRecord, IsolationLevel, Producer, ProducerRecord,
    TopicPartition,
};

async fn start() -> (TestCluster, streamhouse_agent::RunningAgent, String) {
    let c = TestCluster::new().await;
    let mut config = c.agent_config("default");
    config.transaction_check_interval = Duration::from_millis(100);
    let agent = streamhouse_agent::Agent::start_with(config, c.metadata.clone(), c.store.clone())
        .await
        .unwrap();
    c.topic("t", 1).await;
    let address = agent.local_addr().to_string();
    (c, agent, address)
}

async fn transactional(address: &str, id: &str) -> Producer {
    transactional_with_timeout(address, id, Duration::from_secs(60)).await
}

async fn transactional_with_timeout(address: &str, id: &str, timeout: Duration) -> Producer {
    let p = Producer::builder()
        .bootstrap(address)
        .transactional_id(id)
        .batch_timeout(Duration::from_millis(1))
        .transaction_timeout(timeout)
        .build()
        .await
        .unwrap();
    p.init_transactions().await.unwrap();
    p
}

fn reader(address: &str, level: IsolationLevel) -> streamhouse_client::ConsumerBuilder {
    Consumer::builder()
        .bootstrap(address)
        .assign([TopicPartition::new("t", 0)])
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .isolation_level(level)
        .fetch_max_wait(Duration::from_millis(20))
}

async fn values(c: &Consumer, want: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut out: Vec<ConsumerRecord> = Vec::new();
    while out.len() < want && tokio::time::Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(50)).await.unwrap());
    }
    // Nothing more arrives.
    out.extend(c.poll(Duration::from_millis(200)).await.unwrap());
    out.iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

/// What arrives within `window` (well within the transaction timeout).
async fn quiet(c: &Consumer, window: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    while tokio::time::Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(50)).await.unwrap());
    }
    out.iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

async fn send_all(p: &Producer, prefix: &str, n: usize) {
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(
            p.send_record(ProducerRecord::new("t", format!("{prefix}{i}")))
                .await
                .unwrap(),
        );
    }
    for d in pending {
        d.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_transactions_are_invisible_to_read_committed() {
    let (_c, agent, a) = start().await;
    let p = transactional(&a, "tx-a").await;
    let plain = Producer::builder().bootstrap(&a).build().await.unwrap();
    p.begin_transaction().unwrap();
    send_all(&p, "aborted", 10).await;
    plain.send("t", None, b"plain", None).await.unwrap();
    p.abort_transaction().await.unwrap();
    p.begin_transaction().unwrap();
    send_all(&p, "committed", 5).await;
    p.commit_transaction().await.unwrap();

    let committed = reader(&a, IsolationLevel::ReadCommitted)
        .build()
        .await
        .unwrap();
    let got = values(&committed, 6).await;
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(got.iter().all(|v| !v.starts_with("aborted")), "{got:?}");
    assert!(got.contains(&"plain".to_string()));
    let uncommitted = reader(&a, IsolationLevel::ReadUncommitted)
        .build()
        .await
        .unwrap();
    let all = values(&uncommitted, 16).await;
    assert_eq!(all.len(), 16, "every data record, no markers: {all:?}");
    committed.close().await.unwrap();
    uncommitted.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_back_read_committed_readers() {
    let (c, agent, a) = start().await;
    let p = transactional(&a, "tx-b").await;
    let plain = Producer::builder().bootstrap(&a).build().await.unwrap();
    p.begin_transaction().unwrap();
    send_all(&p, "pending", 3).await;
    plain.send("t", None, b"after", None).await.unwrap();
    let t = c.metadata.get_topic("t").await.unwrap().unwrap();
    let state = c.metadata.partition_state(t.id, 0).await.unwrap();
    assert_eq!((state.last_stable_offset, state.next_offset), (0, 4));
    let committed = reader(&a, IsolationLevel::ReadCommitted)
        .build()
        .await
        .unwrap();
    let v = quiet(&committed, Duration::from_millis(300)).await;
    assert!(v.is_empty(), "stops at the last stable offset: {v:?}");
    let tp = TopicPartition::new("t", 0);
    assert_eq!(
        committed.lag().await.unwrap()[&tp],
        0,
        "lag is measured to the LSO"
    );
    p.commit_transaction().await.unwrap();
    assert_eq!(
        values(&committed, 4).await,
        ["pending0", "pending1", "pending2", "after"]
    );
    committed.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_is_fenced_on_produce_offsets_and_end() {
    let (_c, agent, a) = start().await;
    let zombie = transactional(&a, "tx-c").await;
    zombie.begin_transaction().unwrap();
    send_all(&zombie, "zombie", 2).await;
    // A new instance aborts the zombie's open transaction and fences it.
    let fresh = transactional(&a, "tx-c").await;
    let err = zombie.send("t", None, b"late", None).await.unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
    let offsets = HashMap::from([(TopicPartition::new("t", 0), 1)]);
    let group = streamhouse_client::ConsumerGroupMetadata {
        group_id: "g".into(),
        member: None,
    };
    assert!(
        zombie
            .send_offsets_to_transaction(&offsets, &group)
            .await
            .is_err()
    );
    assert!(zombie.commit_transaction().await.is_err());
    fresh.begin_transaction().unwrap();
    send_all(&fresh, "fresh", 2).await;
    fresh.commit_transaction().await.unwrap();
    let committed = reader(&a, IsolationLevel::ReadCommitted)
        .build()
        .await
        .unwrap();
    assert_eq!(values(&committed, 2).await, ["fresh0", "fresh1"]);
    committed.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_producers_transaction_is_aborted_after_its_timeout() {
    let (_c, agent, a) = start().await;
    let p = transactional_with_timeout(&a, "tx-d", Duration::from_millis(1500)).await;
    p.begin_transaction().unwrap();
    send_all(&p, "orphan", 3).await;
    drop(p);
    let plain = Producer::builder().bootstrap(&a).build().await.unwrap();
    plain.send("t", None, b"later", None).await.unwrap();
    let committed = reader(&a, IsolationLevel::ReadCommitted)
        .build()
        .await
        .unwrap();
    // Held back until the 1.5 s timeout aborts the transaction.
    assert!(
        quiet(&committed, Duration::from_millis(300))
            .await
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(values(&committed, 1).await, ["later"]);
    committed.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_move_only_when_the_transaction_commits() {
    let (c, agent, a) = start().await;
    c.topic("out", 1).await;
    let plain = Producer::builder().bootstrap(&a).build().await.unwrap();
    for i in 0..6 {
        plain
            .send("t", None, format!("in{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    let consumer = Consumer::builder()
        .bootstrap(&a)
        .group_id("copier")
        .subscribe(["t"])
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(3)
        .fetch_max_wait(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let p = transactional(&a, "tx-e").await;
    let tp = TopicPartition::new("t", 0);
    let mut copied = 0;
    let mut round = 0;
    while copied < 6 {
        let records = consumer.poll(Duration::from_millis(100)).await.unwrap();
        if records.is_empty() {
            continue;
        }
        p.begin_transaction().unwrap();
        for r in &records {
            // Delivery is checked by commit_transaction.
            drop(
                p.send_record(ProducerRecord::new("out", r.value.clone().unwrap()))
                    .await
                    .unwrap(),
            );
        }
        p.send_offsets_to_transaction(&consumer.positions(), &consumer.group_metadata().unwrap())
            .await
            .unwrap();
        if round == 0 {
            // The first round aborts: its offsets do not move.
            p.abort_transaction().await.unwrap();
            assert_eq!(consumer.committed(&tp).await.unwrap(), None);
            consumer.rewind_to_committed().await.unwrap();
        } else {
            p.commit_transaction().await.unwrap();
            copied += records.len();
            assert_eq!(consumer.committed(&tp).await.unwrap(), Some(copied as i64));
        }
        round += 1;
    }
    let out = Consumer::builder()
        .bootstrap(&a)
        .assign([TopicPartition::new("out", 0)])
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .isolation_level(IsolationLevel::ReadCommitted)
        .build()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < 6 && tokio::time::Instant::now() < deadline {
        got.extend(out.poll(Duration::from_millis(50)).await.unwrap());
    }
    let got: Vec<_> = got
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(got, (0..6).map(|i| format!("in{i}")).collect::<Vec<_>>());
    consumer.close().await.unwrap();
    out.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_during_send_offsets_makes_the_transaction_abortable_not_fatal() {
    let (c, agent, a) = start().await;
    c.topic("in", 2).await;
    c.topic("out", 1).await;
    let plain = Producer::builder().bootstrap(&a).build().await.unwrap();
    for i in 0..4 {
        plain
            .send("in", None, format!("in{i}").as_bytes(), Some(i % 2))
            .await
            .unwrap();
    }
    let member = |client: &str| {
        Consumer::builder()
            .bootstrap(&a)
            .group_id("rebalanced")
            .client_id(client)
            .subscribe(["in"])
            .enable_auto_commit(false)
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(20))
    };
    let first = member("first").build().await.unwrap();
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while records.len() < 4 && tokio::time::Instant::now() < deadline {
        records.extend(first.poll(Duration::from_millis(50)).await.unwrap());
    }
    assert_eq!(records.len(), 4, "the only member reads both partitions");
    let stale = first.group_metadata().unwrap();
    let stale_epoch = stale.member.as_ref().unwrap().1;

    // Another member joins: the group rebalances and the first member's
    // epoch moves on.
    let second = member("second").build().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        first.poll(Duration::from_millis(50)).await.unwrap();
        second.poll(Duration::from_millis(50)).await.unwrap();
        let now = first.group_metadata().unwrap();
        if now.member.as_ref().is_some_and(|m| m.1 != stale_epoch) && first.assignment().len() == 1
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the member epoch never moved on: {now:?}"
        );
    }

    let p = transactional(&a, "tx-rebalance").await;
    // The partition the first member kept, read to its end.
    let offsets = first.positions();
    assert_eq!(offsets.len(), 1, "{offsets:?}");
    let (tp, position) = offsets
        .iter()
        .next()
        .map(|(tp, &o)| (tp.clone(), o))
        .unwrap();
    assert_eq!(position, 2);
    p.begin_transaction().unwrap();
    drop(
        p.send_record(ProducerRecord::new("out", "copied"))
            .await
            .unwrap(),
    );
    let err = p
        .send_offsets_to_transaction(&offsets, &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, streamhouse_client::Error::TransactionAbortable { .. }),
        "a stale member epoch is abortable, not fatal: {err:?}"
    );
    assert_eq!(
        err.code(),
        Some(streamhouse_client::ErrorCode::FencedMemberEpoch),
        "{err:?}"
    );
    let commit = p.commit_transaction().await.unwrap_err();
    assert!(
        matches!(
            commit,
            streamhouse_client::Error::TransactionAbortable { .. }
        ),
        "{commit:?}"
    );
    p.abort_transaction().await.unwrap();
    assert_eq!(first.committed(&tp).await.unwrap(), None);

    // The producer carries on: the next transaction, with the member's
    // current metadata, commits records and offsets.
    p.begin_transaction().unwrap();
    drop(
        p.send_record(ProducerRecord::new("out", "copied again"))
            .await
            .unwrap(),
    );
    let current = first.group_metadata().unwrap();
    p.send_offsets_to_transaction(&offsets, &current)
        .await
        .unwrap();
    p.commit_transaction().await.unwrap();
    assert_eq!(first.committed(&tp).await.unwrap(), Some(2));
    let out = Consumer::builder()
        .bootstrap(&a)
        .assign([TopicPartition::new("out", 0)])
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .isolation_level(IsolationLevel::ReadCommitted)
        .fetch_max_wait(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.is_empty() && tokio::time::Instant::now() < deadline {
        got.extend(out.poll(Duration::from_millis(50)).await.unwrap());
    }
    let got: Vec<_> = got
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(got, ["copied again"], "the aborted record stays invisible");
    first.close().await.unwrap();
    second.close().await.unwrap();
    out.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_larger_than_a_fetch_does_not_stall_readers() {
    let (_c, agent, a) = start().await;
    let p = transactional(&a, "tx-big").await;
    p.begin_transaction().unwrap();
    // About 3 MiB, well over max_partition_fetch_bytes (1 MiB).
    let big = vec![b'x'; 10_000];
    let mut pending = Vec::new();
    for _ in 0..300 {
        pending.push(
            p.send_record(ProducerRecord::new("t", big.clone()))
                .await
                .unwrap(),
        );
    }
    for d in pending {
        d.await.unwrap();
    }
    p.abort_transaction().await.unwrap();
    p.begin_transaction().unwrap();
    send_all(&p, "after", 5).await;
    p.commit_transaction().await.unwrap();

    let committed = reader(&a, IsolationLevel::ReadCommitted)
        .build()
        .await
        .unwrap();
    let got = values(&committed, 5).await;
    assert_eq!(got, ["after0", "after1", "after2", "after3", "after4"]);
    // The position passed the aborted records and the markers.
    let end = committed.position(&TopicPartition::new("t", 0)).unwrap();
    assert_eq!(
        end,
        300 + 1 + 5 + 1,
        "records, abort marker, records, commit marker"
    );
    committed.close().await.unwrap();
    agent.shutdown().await.unwrap();
}
