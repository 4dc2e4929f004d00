//! The Producer through its public API against real agents over gRPC.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use common::TestCluster;
use futures::FutureExt;
use streamhouse_client::partitioner::partition_for_key;
use streamhouse_client::{Error, Producer, ProducerRecord};
use streamhouse_storage::testing::FaultyStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_producer_api_with_metadata_store() {
    let c = TestCluster::new().await;
    let agent = c.agent("prod").await;
    c.topic("orders", 3).await;
    let producer = Producer::builder()
        .metadata_store(c.metadata.clone())
        .agent_group("prod")
        .compression_enabled(true)
        .build()
        .await
        .unwrap();
    let result = producer
        .send("orders", Some(b"user123"), b"order data", None)
        .await
        .unwrap();
    assert_eq!(result.partition, partition_for_key(b"user123", 3));
    assert_eq!(result.offset, 0);
    let result = producer
        .send("orders", Some(b"user456"), b"order data 2", Some(1))
        .await
        .unwrap();
    assert_eq!((result.partition, result.offset), (1, 0));
    producer.close().await.unwrap();
    let stored = c.read("orders", 1).await;
    assert_eq!(stored[0].value.as_deref(), Some(&b"order data 2"[..]));
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_dense_and_ordered_per_partition() {
    let c = TestCluster::new().await;
    let agent = c.agent("default").await;
    c.topic("events", 4).await;
    let producer = Producer::builder()
        .bootstrap(agent.local_addr().to_string())
        .batch_size(50)
        .batch_timeout(Duration::from_millis(2))
        .build()
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..4000u32 {
        let key = format!("key-{}", i % 37);
        let record = ProducerRecord::new("events", format!("{key}/{i}")).key(key.clone());
        pending.push((key, i, producer.send_record(record).await.unwrap()));
    }
    let mut acked: BTreeMap<u32, Vec<(i64, String, u32)>> = BTreeMap::new();
    for (key, i, d) in pending {
        let r = d.await.unwrap();
        assert_eq!(r.partition, partition_for_key(key.as_bytes(), 4), "{key}");
        acked
            .entry(r.partition)
            .or_default()
            .push((r.offset, key, i));
    }
    for (partition, mut records) in acked {
        records.sort();
        // Dense from 0, and each key's records in the order they were sent.
        let mut last_by_key: HashMap<String, u32> = HashMap::new();
        for (n, (offset, key, i)) in records.iter().enumerate() {
            assert_eq!(*offset, n as i64, "partition {partition}");
            if let Some(prev) = last_by_key.insert(key.clone(), *i) {
                assert!(prev < *i, "{key}: {prev} after {i}");
            }
        }
        let stored = c.read("events", partition).await;
        assert_eq!(stored.len(), records.len());
        for (s, (offset, key, i)) in stored.iter().zip(&records) {
            assert_eq!(s.offset, *offset);
            assert_eq!(s.value.as_deref(), Some(format!("{key}/{i}").as_bytes()));
        }
    }
    producer.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_where_kafka_clients_put_them() {
    let c = TestCluster::new().await;
    let agent = c.agent("default").await;
    c.topic("k", 3).await;
    let producer = Producer::builder()
        .bootstrap(agent.local_addr().to_string())
        .build()
        .await
        .unwrap();
    // Partitions kafka-python's DefaultPartitioner picks for these keys.
    for (key, partition) in [("user123", 0), ("user456", 2), ("key-0", 1), ("", 0)] {
        let r = producer
            .send("k", Some(key.as_bytes()), b"v", None)
            .await
            .unwrap();
        assert_eq!(r.partition, partition, "{key:?}");
        // Stable: the same key goes to the same partition again.
        let again = producer
            .send("k", Some(key.as_bytes()), b"v", None)
            .await
            .unwrap();
        assert_eq!(again.partition, partition);
    }
    producer.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_fill_sticky_batches_across_partitions() {
    let c = TestCluster::new().await;
    let agent = c.agent("default").await;
    c.topic("sticky", 4).await;
    let producer = Producer::builder()
        .bootstrap(agent.local_addr().to_string())
        .batch_size(10)
        .build()
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..400 {
        pending.push(
            producer
                .send_record(ProducerRecord::new("sticky", format!("{i}")))
                .await
                .unwrap(),
        );
    }
    let mut per_partition: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for d in pending {
        let r = d.await.unwrap();
        per_partition.entry(r.partition).or_default().push(r.offset);
    }
    assert!(
        per_partition.len() > 1,
        "keyless records spread over partitions"
    );
    for offsets in per_partition.values() {
        // Whole batches of 10 go to one partition at a time.
        assert_eq!(offsets.len() % 10, 0, "{offsets:?}");
    }
    producer.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_timestamps_and_tombstones_round_trip() {
    let c = TestCluster::new().await;
    let agent = c.agent("default").await;
    c.topic("h", 1).await;
    let producer = Producer::builder()
        .bootstrap(agent.local_addr().to_string())
        .compression(streamhouse_client::Compression::None)
        .build()
        .await
        .unwrap();
    let record = ProducerRecord::new("h", "body")
        .key("k1")
        .header("trace-id", "abc")
        .header("source", "test")
        .timestamp(1_600_000_000_123);
    let sent = producer.send_record(record).await.unwrap().await.unwrap();
    assert_eq!(sent.timestamp, 1_600_000_000_123);
    let tombstone = ProducerRecord {
        topic: "h".into(),
        key: Some(Bytes::from_static(b"k1")),
        ..Default::default()
    };
    producer
        .send_record(tombstone)
        .await
        .unwrap()
        .await
        .unwrap();
    producer.close().await.unwrap();
    let stored = c.read("h", 0).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].timestamp, 1_600_000_000_123);
    assert_eq!(stored[0].key.as_deref(), Some(&b"k1"[..]));
    let headers: Vec<_> = stored[0]
        .headers
        .iter()
        .map(|h| (h.key.as_str(), h.value.clone().unwrap()))
        .collect();
    assert_eq!(
        headers,
        [
            ("trace-id", Bytes::from("abc")),
            ("source", Bytes::from("test"))
        ]
    );
    assert_eq!(stored[1].value, None, "tombstone");
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sends_get_clear_errors() {
    let c = TestCluster::new().await;
    let agent = c.agent("default").await;
    c.topic("t", 3).await;
    let producer = Producer::builder()
        .bootstrap(agent.local_addr().to_string())
        .build()
        .await
        .unwrap();
    let err = producer.send("nope", None, b"v", None).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTopic(t) if t == "nope"),
        "{err}"
    );
    let err = producer.send("t", None, b"v", Some(3)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnknownPartition {
                partition: 3,
                partition_count: 3,
                ..
            }
        ),
        "{err}"
    );
    let huge = vec![7u8; 2 << 20];
    let err = producer.send("t", None, &huge, None).await.unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("maximum batch size"), "{err}");
    assert!(!err.is_retryable());
    // Nothing above reached the topic; the producer still works.
    assert_eq!(
        producer
            .send("t", None, b"ok", Some(0))
            .await
            .unwrap()
            .offset,
        0
    );
    producer.close().await.unwrap();
    let err = producer.send("t", None, b"late", None).await.unwrap_err();
    assert!(matches!(err, Error::Closed), "{err}");
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_agents_give_clear_errors() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let err = match Producer::builder()
        .bootstrap(address.clone())
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("built a producer with no agent"),
    };
    assert!(matches!(err, Error::NoAgents { .. }), "{err}");
    assert!(err.to_string().contains(&address), "{err}");
    assert!(err.is_retryable());

    // Through the metadata store: no agent registered in the group.
    let c = TestCluster::new().await;
    let err = match Producer::builder()
        .metadata_store(c.metadata.clone())
        .agent_group("nobody")
        .build()
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("built a producer with no agent"),
    };
    assert!(
        err.to_string().contains("streamhouse agent --group nobody"),
        "{err}"
    );
    let err = match Producer::builder().build().await {
        Err(e) => e,
        Ok(_) => panic!("built a producer without discovery"),
    };
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_flush_deliver_everything_sent_before() {
    let c = TestCluster::new().await;
    let agent = c.agent("default").await;
    c.topic("c", 2).await;
    let producer = Producer::builder()
        .bootstrap(agent.local_addr().to_string())
        .batch_size(1000)
        .batch_timeout(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    // Batches far from full and a long timeout: only flush sends them.
    let mut first = Vec::new();
    for i in 0..50 {
        first.push(
            producer
                .send_record(ProducerRecord::new("c", format!("{i}")).partition(0))
                .await
                .unwrap(),
        );
    }
    producer.flush().await.unwrap();
    for d in first {
        d.now_or_never().expect("delivered by flush").unwrap();
    }
    let mut second = Vec::new();
    for i in 0..70 {
        second.push(
            producer
                .send_record(ProducerRecord::new("c", format!("{i}")).partition(1))
                .await
                .unwrap(),
        );
    }
    producer.close().await.unwrap();
    for d in second {
        d.now_or_never().expect("delivered by close").unwrap();
    }
    assert_eq!(c.read("c", 0).await.len(), 50);
    assert_eq!(c.read("c", 1).await.len(), 70);
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_storage_failures_are_retried_transparently() {
    let c = TestCluster::new().await;
    let faulty = FaultyStore::new(c.store.clone());
    let agent = c.agent_on("default", faulty.clone()).await;
    c.topic("r", 2).await;
    let producer = Producer::builder()
        .bootstrap(agent.local_addr().to_string())
        .batch_size(20)
        .batch_timeout(Duration::from_millis(2))
        .retry_backoff(Duration::from_millis(5))
        .max_retries(5)
        .build()
        .await
        .unwrap();
    faulty.fail_next_puts(3);
    let mut pending = Vec::new();
    for i in 0..200 {
        pending.push(
            producer
                .send_record(ProducerRecord::new("r", format!("{i}")))
                .await
                .unwrap(),
        );
    }
    for d in pending {
        d.await.unwrap();
    }
    producer.close().await.unwrap();
    let mut values: Vec<String> = Vec::new();
    for p in 0..2 {
        values.extend(
            c.read("r", p)
                .await
                .into_iter()
                .map(|s| String::from_utf8(s.value.unwrap().to_vec()).unwrap()),
        );
    }
    values.sort_by_key(|v| v.parse::<u32>().unwrap());
    assert_eq!(
        values,
        (0..200).map(|i| i.to_string()).collect::<Vec<_>>(),
        "every record once"
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_failures_fail_the_records_after_max_retries() {
    let c = TestCluster::new().await;
    let faulty = FaultyStore::new(c.store.clone());
    let agent = c.agent_on("default", faulty.clone()).await;
    c.topic("p", 1).await;
    let producer = Producer::builder()
        .bootstrap(agent.local_addr().to_string())
        .retry_backoff(Duration::from_millis(1))
        .max_retries(2)
        .batch_timeout(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    faulty.fail_puts(true);
    let err = producer.send("p", None, b"lost", None).await.unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 3, .. }),
        "{err}"
    );
    // Storage is back: the producer goes on (with a new epoch) and nothing
    // is duplicated.
    faulty.fail_puts(false);
    let ok = producer.send("p", None, b"kept", None).await.unwrap();
    assert_eq!(ok.offset, 0);
    producer.close().await.unwrap();
    assert_eq!(c.read("p", 0).await.len(), 1);
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bytes_are_bounded() {
    let c = TestCluster::new().await;
    let faulty = FaultyStore::new(c.store.clone());
    let agent = c.agent_on("default", faulty.clone()).await;
    c.topic("b", 1).await;
    let producer = Producer::builder()
        .bootstrap(agent.local_addr().to_string())
        .max_buffered_bytes(64 << 10)
        .max_batch_bytes(16 << 10)
        .batch_timeout(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    // Warm the topic metadata, then hold every upload at the agent.
    producer.send("b", None, b"first", None).await.unwrap();
    let held = faulty.hold_puts().await;
    let value = vec![1u8; 1000];
    let mut pending = Vec::new();
    let blocked = loop {
        let mut send = Box::pin(producer.send_record(ProducerRecord::new("b", value.clone())));
        match futures::poll!(send.as_mut()) {
            std::task::Poll::Ready(d) => pending.push(d.unwrap()),
            std::task::Poll::Pending => break send,
        }
        assert!(pending.len() < 100, "send never waited for buffer space");
    };
    assert!(pending.len() >= 60, "waited too early: {}", pending.len());
    drop(held);
    pending.push(blocked.await.unwrap());
    for d in pending {
        d.await.unwrap();
    }
    producer.close().await.unwrap();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_an_agent_stops() {
    let c = TestCluster::new().await;
    let mut a = Some(c.agent("default").await);
    let b = c.agent("default").await;
    c.topic("f", 2).await;
    let producer = Producer::builder()
        .metadata_store(c.metadata.clone())
        .batch_timeout(Duration::from_millis(1))
        .retry_backoff(Duration::from_millis(10))
        .max_retries(10)
        .build()
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..300 {
        if i == 100 {
            a.take().unwrap().shutdown().await.unwrap();
        }
        if i == 150 {
            // Let the producer notice before the second half.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pending.push(
            producer
                .send_record(ProducerRecord::new("f", format!("{i}")))
                .await
                .unwrap(),
        );
    }
    for d in pending {
        d.await.unwrap();
    }
    producer.close().await.unwrap();
    let mut values: Vec<u32> = Vec::new();
    for p in 0..2 {
        values.extend(c.read("f", p).await.into_iter().map(|s| {
            std::str::from_utf8(&s.value.unwrap())
                .unwrap()
                .parse::<u32>()
                .unwrap()
        }));
    }
    values.sort();
    assert_eq!(values, (0..300).collect::<Vec<_>>());
    b.shutdown().await.unwrap();
}
