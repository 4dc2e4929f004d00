//! The Consumer through its public API against real agents over gRPC.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestCluster;
use futures::future::BoxFuture;
use streamhouse_client::{
    AutoOffsetReset, Consumer, ConsumerRecord, Error, Producer, ProducerRecord, RebalanceListener,
    TopicPartition,
};

async fn produce(address: &str, topic: &str, n: usize, tag: &str) {
    let producer = Producer::builder()
        .bootstrap(address)
        .batch_timeout(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..n {
        let record = ProducerRecord::new(topic, format!("{tag}{i}")).key(format!("k{i}"));
        pending.push(producer.send_record(record).await.unwrap());
    }
    for d in pending {
        d.await.unwrap();
    }
    producer.close().await.unwrap();
}

fn group_consumer(address: &str, group: &str, topic: &str) -> streamhouse_client::ConsumerBuilder {
    Consumer::builder()
        .bootstrap(address)
        .group_id(group)
        .subscribe([topic])
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .session_timeout(Duration::from_millis(1500))
        .fetch_max_wait(Duration::from_millis(50))
}

/// Polls until `n` records arrived or the time is up.
async fn poll_n(c: &Consumer, n: usize, within: Duration) -> Vec<ConsumerRecord> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && tokio::time::Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(100)).await.unwrap());
    }
    out
}

async fn start(partitions: u32) -> (TestCluster, streamhouse_agent::RunningAgent, String) {
    let c = TestCluster::new().await;
    let mut config = c.agent_config("default");
    config.group_heartbeat_interval = Duration::from_millis(50);
    let agent = streamhouse_agent::Agent::start_with(config, c.metadata.clone(), c.store.clone())
        .await
        .unwrap();
    c.topic("t", partitions).await;
    let address = agent.local_addr().to_string();
    (c, agent, address)
}

/// Polls every consumer until their assignments cover `partitions`, evenly
/// and with no overlap; checks at every step that no partition has two owners.
async fn settle(consumers: &[&Consumer], partitions: usize) {
    for _ in 0..200 {
        for c in consumers {
            c.poll(Duration::from_millis(10)).await.unwrap();
        }
        let mut all: Vec<TopicPartition> = consumers.iter().flat_map(|c| c.assignment()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a partition is owned by two consumers");
        let sizes: Vec<usize> = consumers.iter().map(|c| c.assignment().len()).collect();
        let balanced = sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1;
        if n == partitions && balanced {
            return;
        }
    }
    panic!("the group did not settle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_three_rebalances_on_close_kill_and_join() {
    let (_c, agent, a) = start(12).await;
    let c1 = group_consumer(&a, "g", "t").build().await.unwrap();
    let c2 = group_consumer(&a, "g", "t").build().await.unwrap();
    let c3 = group_consumer(&a, "g", "t").build().await.unwrap();
    settle(&[&c1, &c2, &c3], 12).await;
    for c in [&c1, &c2, &c3] {
        assert_eq!(c.assignment().len(), 4, "balanced");
    }

    // Close: its partitions move at once (well before the session timeout).
    let started = tokio::time::Instant::now();
    c3.close().await.unwrap();
    settle(&[&c1, &c2], 12).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c1.assignment().len(), 6);

    // Kill (no leave): its partitions move after the session timeout.
    let before = c1.assignment();
    drop(c2);
    let started = tokio::time::Instant::now();
    settle(&[&c1], 12).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert!(
        before.iter().all(|tp| c1.assignment().contains(tp)),
        "sticky"
    );

    // Join: incremental, never two owners.
    let c4 = group_consumer(&a, "g", "t").build().await.unwrap();
    settle(&[&c1, &c4], 12).await;
    assert_eq!(c1.assignment().len(), 6);
    assert_eq!(c4.assignment().len(), 6);
    c1.close().await.unwrap();
    c4.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

/// Commits what it consumed when partitions are revoked.
struct CommitOnRevoke {
    revoked: Mutex<Vec<TopicPartition>>,
}

impl RebalanceListener for CommitOnRevoke {
    fn on_revoked<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.revoked
                .lock()
                .unwrap()
                .extend(partitions.iter().cloned());
            consumer.commit().await.unwrap();
        })
    }
    fn on_assigned<'a>(&'a self, _: &'a Consumer, _: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_on_revoke_gives_no_loss_and_no_duplicates() {
    let (_c, agent, a) = start(6).await;
    produce(&a, "t", 600, "r").await;
    let listener = Arc::new(CommitOnRevoke {
        revoked: Mutex::new(Vec::new()),
    });
    let c1 = group_consumer(&a, "g", "t")
        .enable_auto_commit(false)
        .max_poll_records(50)
        .rebalance_listener(listener.clone())
        .build()
        .await
        .unwrap();
    let mut seen = poll_n(&c1, 200, Duration::from_secs(10)).await;
    assert!(seen.len() >= 200);
    let c2 = group_consumer(&a, "g", "t")
        .enable_auto_commit(false)
        .max_poll_records(50)
        .build()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.len() < 600 && tokio::time::Instant::now() < deadline {
        seen.extend(c1.poll(Duration::from_millis(20)).await.unwrap());
        seen.extend(c2.poll(Duration::from_millis(20)).await.unwrap());
    }
    assert!(
        !listener.revoked.lock().unwrap().is_empty(),
        "c1 gave partitions to c2"
    );
    let mut values: Vec<String> = seen
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    values.sort();
    let n = values.len();
    values.dedup();
    assert_eq!(values.len(), n, "no record delivered twice");
    assert_eq!(n, 600, "every record delivered");
    c1.close().await.unwrap();
    c2.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_revokes_every_partition_before_leaving() {
    let (_c, agent, a) = start(4).await;
    produce(&a, "t", 40, "r").await;
    let listener = Arc::new(CommitOnRevoke {
        revoked: Mutex::new(Vec::new()),
    });
    let c = group_consumer(&a, "g", "t")
        .enable_auto_commit(false)
        .rebalance_listener(listener.clone())
        .build()
        .await
        .unwrap();
    settle(&[&c], 4).await;
    let seen = poll_n(&c, 40, Duration::from_secs(10)).await;
    assert_eq!(seen.len(), 40);
    let mut owned = c.assignment();
    c.close().await.unwrap();
    let mut revoked = listener.revoked.lock().unwrap().clone();
    owned.sort();
    revoked.sort();
    assert_eq!(revoked, owned, "on_revoked ran for every owned partition");
    assert!(c.assignment().is_empty());

    // The listener's commit in on_revoked landed: a new member starts at
    // the end.
    let again = group_consumer(&a, "g", "t").build().await.unwrap();
    settle(&[&again], 4).await;
    assert!(
        poll_n(&again, 1, Duration::from_millis(500))
            .await
            .is_empty()
    );
    again.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_consumers_uncommitted_records_are_delivered_again() {
    let (_c, agent, a) = start(2).await;
    produce(&a, "t", 100, "r").await;
    let c1 = group_consumer(&a, "g", "t")
        .enable_auto_commit(false)
        .build()
        .await
        .unwrap();
    let first = poll_n(&c1, 100, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 100);
    // Commit only partition 0's progress, then crash.
    let p0: HashMap<_, _> = [(
        TopicPartition::new("t", 0),
        c1.position(&TopicPartition::new("t", 0)).unwrap(),
    )]
    .into();
    c1.commit_offsets(p0).await.unwrap();
    let p1_records = first.iter().filter(|r| r.partition == 1).count();
    drop(c1);
    let c2 = group_consumer(&a, "g", "t")
        .enable_auto_commit(false)
        .build()
        .await
        .unwrap();
    let again = poll_n(&c2, p1_records, Duration::from_secs(10)).await;
    assert!(
        again.iter().all(|r| r.partition == 1),
        "partition 0 resumes at its commit"
    );
    assert_eq!(
        again.len(),
        p1_records,
        "partition 1 is delivered again from the start"
    );
    c2.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_see_every_record_once_in_order_while_two_agents_write() {
    let (c, agent, a) = start(4).await;
    let b = c.agent("default").await;
    let b_addr = b.local_addr().to_string();
    let consumer = group_consumer(&a, "g", "t").build().await.unwrap();
    let writers = [a.clone(), b_addr.clone()].map(|addr| {
        tokio::spawn(async move { produce(&addr, "t", 500, &format!("{addr}-")).await })
    });
    let records = poll_n(&consumer, 1000, Duration::from_secs(20)).await;
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(records.len(), 1000);
    let mut last: BTreeMap<u32, i64> = BTreeMap::new();
    for r in &records {
        if let Some(prev) = last.insert(r.partition, r.offset) {
            assert_eq!(
                r.offset,
                prev + 1,
                "partition {} in order, no gap",
                r.partition
            );
        }
    }
    let distinct: BTreeSet<_> = records.iter().map(|r| r.value.clone()).collect();
    assert_eq!(distinct.len(), 1000);
    consumer.close().await.unwrap();
    b.shutdown().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_reset_seek_and_out_of_range() {
    let (_c, agent, a) = start(1).await;
    produce(&a, "t", 10, "old").await;
    let tp = TopicPartition::new("t", 0);
    // Latest: only new records.
    let latest = Consumer::builder()
        .bootstrap(&a)
        .assign([tp.clone()])
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Latest)
        .build()
        .await
        .unwrap();
    assert_eq!(latest.position(&tp).unwrap(), 10);
    // None: an error naming the partition.
    let err = Consumer::builder()
        .bootstrap(&a)
        .group_id("fresh")
        .assign([tp.clone()])
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::None)
        .build()
        .await
        .err()
        .expect("no committed offset");
    assert!(matches!(err, Error::NoOffset(_)), "{err}");
    // Earliest, then seek around.
    let c = Consumer::builder()
        .bootstrap(&a)
        .assign([tp.clone()])
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let all = poll_n(&c, 10, Duration::from_secs(5)).await;
    assert_eq!(
        all.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    c.seek(&tp, 7).unwrap();
    let tail = poll_n(&c, 3, Duration::from_secs(5)).await;
    assert_eq!(tail.iter().map(|r| r.offset).collect::<Vec<_>>(), [7, 8, 9]);
    c.seek_to_beginning(&tp).await.unwrap();
    assert_eq!(c.position(&tp).unwrap(), 0);
    c.seek_to_end(&tp).await.unwrap();
    assert_eq!(c.position(&tp).unwrap(), 10);
    assert_eq!(c.lag().await.unwrap()[&tp], 0);
    // Beyond the end: reset per policy (earliest here).
    c.seek(&tp, 1_000).unwrap();
    let reset = poll_n(&c, 10, Duration::from_secs(5)).await;
    assert_eq!(reset.first().map(|r| r.offset), Some(0));
    assert!(matches!(
        c.seek(&TopicPartition::new("t", 5), 0),
        Err(Error::NotAssigned(_))
    ));
    latest.close().await.unwrap();
    c.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commit_commits_only_what_poll_returned() {
    let (_c, agent, a) = start(1).await;
    produce(&a, "t", 50, "r").await;
    let tp = TopicPartition::new("t", 0);
    let c = group_consumer(&a, "auto", "t")
        .max_poll_records(20)
        .auto_commit_interval(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    let got = poll_n(&c, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 20, "one poll of max_poll_records");
    // The next poll auto-commits the position after those 20.
    let more = c.poll(Duration::from_millis(10)).await.unwrap();
    let committed = c.committed(&tp).await.unwrap().unwrap();
    assert!(
        committed == 20 || committed == 20 + more.len() as i64,
        "{committed}"
    );
    c.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_and_async_commit() {
    use futures::StreamExt;
    let (_c, agent, a) = start(1).await;
    produce(&a, "t", 30, "s").await;
    let tp = TopicPartition::new("t", 0);
    let consumer = Arc::new(
        group_consumer(&a, "streamers", "t")
            .enable_auto_commit(false)
            .build()
            .await
            .unwrap(),
    );
    let first: Vec<_> = consumer.stream().take(30).collect().await;
    let offsets: Vec<i64> = first.into_iter().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, (0..30).collect::<Vec<_>>());
    consumer.commit_async();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while consumer.committed(&tp).await.unwrap() != Some(30) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "async commit never landed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_asking_for_the_range_assignor_get_contiguous_ranges() {
    let (_c, agent, a) = start(5).await;
    let ranged = || group_consumer(&a, "ranged", "t").group_assignor("range");
    let c1 = ranged().build().await.unwrap();
    let c2 = ranged().build().await.unwrap();
    settle(&[&c1, &c2], 5).await;
    let mut sizes = Vec::new();
    for c in [&c1, &c2] {
        let mut parts: Vec<u32> = c.assignment().iter().map(|tp| tp.partition).collect();
        parts.sort_unstable();
        assert!(
            parts.windows(2).all(|w| w[1] == w[0] + 1),
            "a contiguous range: {parts:?}"
        );
        sizes.push(parts.len());
    }
    sizes.sort_unstable();
    assert_eq!(sizes, [2, 3]);
    let unknown = group_consumer(&a, "ranged", "t")
        .group_assignor("sticky")
        .build()
        .await;
    assert!(matches!(unknown, Err(streamhouse_client::Error::Config(m)) if m.contains("sticky")));
    c1.close().await.unwrap();
    c2.close().await.unwrap();
    agent.shutdown().await.unwrap();
}
