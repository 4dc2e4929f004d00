//! A batch damaged in storage stops a consumer with a typed error naming
//! the damaged offsets (never wrong data); seeking past it, or building the
//! consumer with `skip_corrupt_batches`, reads on.

mod common;

use std::time::Duration;

use common::TestCluster;
use streamhouse_client::{
    AutoOffsetReset, Compression, Consumer, Error, Producer, ProducerRecord, TopicPartition,
};

fn objects(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(objects(&path));
        } else if path.extension().is_some_and(|e| e == "sho") {
            out.push(path);
        }
    }
    out
}

async fn poll_values(c: &Consumer, want: usize) -> Result<Vec<String>, Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    while out.len() < want && tokio::time::Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(50)).await? {
            out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_batch_is_reported_then_skipped() {
    let c = TestCluster::new().await;
    let agent = c.agent("default").await;
    c.topic("c", 1).await;
    let p = Producer::builder()
        .bootstrap(agent.local_addr().to_string())
        .compression(Compression::None)
        .build()
        .await
        .unwrap();
    for v in ["first-value", "second-value", "third-value"] {
        p.send_record(ProducerRecord::new("c", v))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    p.close().await.unwrap();
    agent.shutdown().await.unwrap();
    let files = objects(c.dir.path());
    let damaged = files
        .iter()
        .find(|f| std::fs::read(f).unwrap().windows(6).any(|w| w == b"second"))
        .expect("an object holds the second record");
    let mut bytes = std::fs::read(damaged).unwrap();
    let at = bytes.windows(6).position(|w| w == b"second").unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(damaged, bytes).unwrap();

    // A fresh agent reads from storage, not from memory.
    let agent = c.agent("default").await;
    let tp = TopicPartition::new("c", 0);
    let consumer = |skip: bool| {
        Consumer::builder()
            .bootstrap(agent.local_addr().to_string())
            .assign([tp.clone()])
            .enable_auto_commit(false)
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(20))
            .skip_corrupt_batches(skip)
            .build()
    };
    let strict = consumer(false).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let err = loop {
        assert!(tokio::time::Instant::now() < deadline, "no error: {got:?}");
        match strict.poll(Duration::from_millis(50)).await {
            Ok(records) => got.extend(
                records
                    .into_iter()
                    .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()),
            ),
            Err(e) => break e,
        }
    };
    assert_eq!(got, ["first-value"]);
    match &err {
        Error::CorruptBatch {
            partition,
            first_offset,
            last_offset,
            ..
        } => {
            assert_eq!((partition, *first_offset, *last_offset), (&tp, 1, 1));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("seek to 2"), "{err}");
    // It stays stopped (no wrong data, no busy loop) until the seek.
    assert!(
        strict
            .poll(Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    strict.seek(&tp, 2).unwrap();
    assert_eq!(poll_values(&strict, 1).await.unwrap(), ["third-value"]);

    let skipping = consumer(true).await.unwrap();
    assert_eq!(
        poll_values(&skipping, 2).await.unwrap(),
        ["first-value", "third-value"]
    );
    assert_eq!(skipping.position(&tp).unwrap(), 3);
    strict.close().await.unwrap();
    skipping.close().await.unwrap();
    agent.shutdown().await.unwrap();
}
