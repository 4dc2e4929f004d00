//! Background jobs through a running agent: retention, object GC,
//! compaction of small segments, key compaction, leases, and metrics.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, path::Path};
use streamhouse_agent::{Agent, AgentConfig, JobsConfig, RunningAgent};
use streamhouse_core::{NewRecord, RecordBatch};
use streamhouse_metadata::testing::FaultyMetadata;
use streamhouse_metadata::{BatchCommit, ChunkCommit, MetadataStore, ObjectCommit, TopicConfig};
use streamhouse_proto as pb;
use streamhouse_proto::stream_house_client::StreamHouseClient;
use streamhouse_storage::{Reader, ReaderConfig, S3Options, open_object_store};
use tonic::transport::Channel;

struct Env {
    _dir: tempfile::TempDir,
    metadata: Arc<dyn MetadataStore>,
    store: Arc<dyn ObjectStore>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let metadata = streamhouse_metadata::open(&format!(
        "sqlite://{}",
        dir.path().join("metadata.db").display()
    ))
    .await
    .unwrap();
    let store = open_object_store(
        &format!("file://{}", dir.path().join("objects").display()),
        &S3Options::default(),
    )
    .unwrap();
    Env {
        _dir: dir,
        metadata,
        store,
    }
}

fn fast_jobs() -> JobsConfig {
    JobsConfig {
        retention_interval: Duration::from_millis(100),
        gc_interval: Duration::from_millis(100),
        gc_grace: Duration::from_secs(2),
        compaction_interval: Duration::from_millis(100),
        compaction_target_bytes: 64 << 10,
        key_compaction_interval: Duration::from_millis(100),
        key_compaction_map_bytes: 64 << 20,
    }
}

async fn agent(
    e: &Env,
    jobs: JobsConfig,
    metrics: Option<std::net::SocketAddr>,
) -> (RunningAgent, StreamHouseClient<Channel>) {
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        jobs,
        metrics_listen: metrics,
        ..AgentConfig::default()
    };
    config.pipeline.linger = Duration::from_millis(1);
    let agent = Agent::start_with(config, e.metadata.clone(), e.store.clone())
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{}", agent.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (agent, StreamHouseClient::new(channel))
}

async fn topic(e: &Env, name: &str, retention_ms: Option<i64>, config: &[(&str, &str)]) {
    e.metadata
        .create_topic(TopicConfig {
            name: name.into(),
            partition_count: 1,
            retention_ms,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await
        .unwrap();
}

async fn produce(c: &mut StreamHouseClient<Channel>, topic: &str, records: Vec<NewRecord>) -> i64 {
    let batch = RecordBatch::from_records(records).encode().unwrap();
    let r = c
        .produce(pb::ProduceRequest {
            partitions: vec![pb::PartitionRecords {
                topic: topic.into(),
                partition: 0,
                records: batch,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let b = &r.results[0].batches[0];
    assert_eq!(b.error, 0, "{}", b.message);
    b.base_offset
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn value(v: &str) -> NewRecord {
    NewRecord::new(now_ms(), None, v.to_string())
}

/// Every (offset, key, value) of a partition, read by a fresh reader.
async fn read_all(e: &Env, topic: &str) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
    let reader = Reader::new(
        e.store.clone(),
        e.metadata.clone(),
        None,
        ReaderConfig::default(),
    );
    let state = reader.partition_state(topic, 0).await.unwrap();
    let mut at = state.log_start_offset;
    let mut out = Vec::new();
    loop {
        let r = reader.read(topic, 0, at, 1 << 20).await.unwrap();
        if r.batches.is_empty() {
            return out;
        }
        for b in r.batches {
            let batch = RecordBatch::decode(&b).unwrap();
            for (offset, _, rec) in batch.iter() {
                if offset >= at {
                    out.push((offset, rec.key.clone(), rec.value.clone()));
                }
            }
            at = batch.base_offset + i64::from(batch.last_offset_delta) + 1;
        }
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_time_and_size_advances_the_log_start() {
    let e = env().await;
    let (a, mut c) = agent(&e, fast_jobs(), None).await;
    topic(&e, "by-time", Some(300), &[]).await;
    topic(&e, "by-size", None, &[("retention.bytes", "400")]).await;
    for i in 0..5 {
        produce(&mut c, "by-time", vec![value(&format!("t{i}"))]).await;
        produce(&mut c, "by-size", vec![value(&format!("s{i}")); 3]).await;
    }
    let t = e.metadata.get_topic("by-time").await.unwrap().unwrap();
    eventually("time retention", async || {
        let s = e.metadata.partition_state(t.id, 0).await.unwrap();
        s.log_start_offset == s.next_offset
    })
    .await;
    let s = e.metadata.get_topic("by-size").await.unwrap().unwrap();
    // A pass that ran while records were still arriving may have trimmed
    // only part of them: wait for one that saw them all.
    eventually("size retention", async || {
        let start = e
            .metadata
            .partition_state(s.id, 0)
            .await
            .unwrap()
            .log_start_offset;
        // No row left at all is within the limit too.
        let usage = e.metadata.partition_usage(s.id).await.unwrap();
        start > 0 && usage.first().map_or(0, |u| u.bytes) <= 400
    })
    .await;
    // Reading below the log start is out of range, with the new bounds.
    let r = c
        .fetch(pb::FetchRequest {
            partitions: vec![pb::FetchPartition {
                topic: "by-time".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1 << 20,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.partitions[0].error,
        pb::ErrorCode::OffsetOutOfRange as i32
    );
    assert!(
        r.partitions[0].message.contains("log start 5"),
        "{}",
        r.partitions[0].message
    );
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_collects_orphans_and_never_a_referenced_object() {
    let e = env().await;
    let (a, mut c) = agent(&e, fast_jobs(), None).await;
    topic(&e, "gc", None, &[]).await;
    // Orphans: objects no segment references (a failed commit leaves these).
    for i in 0..3 {
        e.store
            .put(
                &Path::from(format!("objects/orphan-{i}.sho")),
                Bytes::from_static(b"junk").into(),
            )
            .await
            .unwrap();
    }
    // Produce and read continuously while the GC runs every 100 ms.
    let mut written = 0;
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        produce(
            &mut c,
            "gc",
            (0..10).map(|i| value(&format!("v{written}-{i}"))).collect(),
        )
        .await;
        written += 10;
        let all = read_all(&e, "gc").await;
        assert_eq!(
            all.len(),
            written,
            "every record readable while the GC runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keys: Vec<String> = e
        .store
        .list(Some(&Path::from("objects")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert!(
        keys.iter().all(|k| !k.contains("orphan")),
        "orphans collected: {keys:?}"
    );
    let all = read_all(&e, "gc").await;
    assert_eq!(all.len(), written);
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_segments_are_merged_while_consumers_read() {
    let e = env().await;
    let (a, mut c) = agent(&e, fast_jobs(), None).await;
    topic(&e, "small", None, &[]).await;
    let t = e.metadata.get_topic("small").await.unwrap().unwrap();
    let mut expected = Vec::new();
    let reader = Reader::new(
        e.store.clone(),
        e.metadata.clone(),
        None,
        ReaderConfig::default(),
    );
    let mut at = 0;
    let mut seen = Vec::new();
    for round in 0..150 {
        let values: Vec<String> = (0..5).map(|i| format!("r{round}-{i}")).collect();
        produce(&mut c, "small", values.iter().map(|v| value(v)).collect()).await;
        expected.extend(values);
        // A consumer reads along: each record once, in order.
        let r = reader.read("small", 0, at, 1 << 20).await.unwrap();
        for b in r.batches {
            let batch = RecordBatch::decode(&b).unwrap();
            for (offset, _, rec) in batch.iter() {
                if offset >= at {
                    seen.push(String::from_utf8(rec.value.clone().unwrap().to_vec()).unwrap());
                }
            }
            at = batch.base_offset + i64::from(batch.last_offset_delta) + 1;
        }
    }
    eventually("merged segments", async || {
        e.metadata.partition_usage(t.id).await.unwrap()[0].segments < 20
    })
    .await;
    let all: Vec<String> = read_all(&e, "small")
        .await
        .into_iter()
        .map(|(_, _, v)| String::from_utf8(v.unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(all, expected, "content and order preserved");
    assert_eq!(
        seen,
        expected[..seen.len()],
        "the concurrent reader saw each record once, in order"
    );
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topics_keep_the_latest_value_per_key() {
    let e = env().await;
    let (a, mut c) = agent(&e, fast_jobs(), None).await;
    topic(
        &e,
        "kv",
        None,
        &[
            ("cleanup.policy", "compact"),
            ("delete.retention.ms", "500"),
        ],
    )
    .await;
    let rec = |k: &str, v: Option<&str>| NewRecord {
        timestamp: now_ms(),
        key: Some(Bytes::from(k.to_string())),
        value: v.map(|v| Bytes::from(v.to_string())),
        headers: vec![],
    };
    produce(
        &mut c,
        "kv",
        vec![rec("a", Some("a1")), rec("b", Some("b1"))],
    )
    .await;
    produce(
        &mut c,
        "kv",
        vec![rec("a", Some("a2")), rec("c", Some("c1"))],
    )
    .await;
    produce(&mut c, "kv", vec![rec("b", None), rec("a", Some("a3"))]).await;
    produce(&mut c, "kv", vec![rec("d", Some("d1"))]).await;
    eventually("compaction by key", async || {
        read_all(&e, "kv").await.len() <= 4
    })
    .await;
    let latest: Vec<_> = read_all(&e, "kv")
        .await
        .into_iter()
        .map(|(o, k, v)| {
            (
                o,
                String::from_utf8(k.unwrap().to_vec()).unwrap(),
                v.map(|v| String::from_utf8(v.to_vec()).unwrap()),
            )
        })
        .collect();
    // Offsets are preserved; b's tombstone stays until delete.retention.ms.
    assert_eq!(
        latest,
        [
            (3, "c".into(), Some("c1".into())),
            (4, "b".into(), None),
            (5, "a".into(), Some("a3".into())),
            (6, "d".into(), Some("d1".into())),
        ]
    );
    eventually("tombstone removal", async || {
        read_all(&e, "kv").await.len() == 3
    })
    .await;
    let t = e.metadata.get_topic("kv").await.unwrap().unwrap();
    assert_eq!(
        e.metadata
            .partition_state(t.id, 0)
            .await
            .unwrap()
            .next_offset,
        7
    );
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agents_job_lease_moves_to_another_agent() {
    let e = env().await;
    let jobs = JobsConfig {
        retention_interval: Duration::from_millis(200),
        ..fast_jobs()
    };
    let (a, _) = agent(&e, jobs.clone(), None).await;
    let a_id = a.agent_id().to_string();
    eventually("a lease", async || {
        e.metadata
            .lease_holder("retention")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let (b, _) = agent(&e, jobs, None).await;
    let holder = e.metadata.lease_holder("retention").await.unwrap().unwrap();
    assert_eq!(holder, a_id, "the first agent keeps renewing its lease");
    a.shutdown().await.unwrap();
    eventually("the lease to move", async || {
        e.metadata
            .lease_holder("retention")
            .await
            .unwrap()
            .as_deref()
            == Some(b.agent_id())
    })
    .await;
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_exposes_the_series() {
    let e = env().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (a, mut c) = agent(&e, fast_jobs(), Some(addr)).await;
    topic(&e, "m", None, &[]).await;
    produce(&mut c, "m", vec![value("x")]).await;
    topic(&e, "m-bad", None, &[("cleanup.policy", "compact")]).await;
    commit_undecodable_batch(&e, "m-bad").await;
    c.fetch(pb::FetchRequest {
        partitions: vec![pb::FetchPartition {
            topic: "m".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut body = String::new();
    eventually("job metrics", async || {
        body = scrape(addr).await;
        body.contains("streamhouse_job_runs_total")
            && body.contains("streamhouse_compaction_skipped_total")
    })
    .await;
    for series in [
        "streamhouse_produce_requests_total",
        "streamhouse_produce_records_total",
        "streamhouse_produce_bytes_total",
        "streamhouse_produce_latency_seconds",
        "streamhouse_fetch_requests_total",
        "streamhouse_fetch_records_total",
        "streamhouse_fetch_bytes_total",
        "streamhouse_flush_duration_seconds",
        "streamhouse_upload_duration_seconds",
        "streamhouse_commit_duration_seconds",
        "streamhouse_flush_bytes",
        "streamhouse_objects_written_total",
        "streamhouse_object_store_requests_total",
        "streamhouse_object_store_bytes_total",
        "streamhouse_job_runs_total",
        "streamhouse_compaction_skipped_total",
    ] {
        assert!(body.contains(series), "{series} missing from:\n{body}");
    }
    a.shutdown().await.unwrap();
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Commits to partition 0 of `topic` one batch whose CRC fails (a byte of
/// its records flipped in storage).
async fn commit_undecodable_batch(e: &Env, topic: &str) {
    let t = e.metadata.get_topic(topic).await.unwrap().unwrap();
    let good = RecordBatch::from_records(vec![NewRecord {
        timestamp: now_ms(),
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"v")),
        headers: vec![],
    }])
    .encode()
    .unwrap();
    let mut bad = good.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let key = format!("objects/{}.sho", ulid::Ulid::new());
    e.store
        .put(&Path::from(key.as_str()), Bytes::from(bad.clone()).into())
        .await
        .unwrap();
    e.metadata
        .commit_object(&ObjectCommit {
            object_key: key,
            size_bytes: bad.len() as u64,
            chunks: vec![ChunkCommit {
                topic_id: t.id,
                partition: 0,
                byte_start: 0,
                batches: vec![BatchCommit {
                    byte_length: bad.len() as u64,
                    offset_span: 1,
                    record_count: 1,
                    min_timestamp: 0,
                    max_timestamp: 0,
                    producer: None,
                }],
            }],
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_compaction_skips_an_undecodable_partition_and_compacts_the_others() {
    let e = env().await;
    // Created first, so listed before the good topic.
    topic(&e, "a-bad", None, &[("cleanup.policy", "compact")]).await;
    topic(&e, "b-good", None, &[("cleanup.policy", "compact")]).await;
    commit_undecodable_batch(&e, "a-bad").await;
    let (a, mut c) = agent(&e, fast_jobs(), None).await;
    let rec = |v: &str| NewRecord {
        timestamp: now_ms(),
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from(v.to_string())),
        headers: vec![],
    };
    produce(&mut c, "b-good", vec![rec("1")]).await;
    produce(&mut c, "b-good", vec![rec("2")]).await;
    eventually("the good topic compacted", async || {
        read_all(&e, "b-good").await.len() == 1
    })
    .await;
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_compaction_rewrites_only_the_segments_that_lose_records() {
    let e = env().await;
    // No merging of small segments: only key compaction swaps objects.
    let jobs = JobsConfig {
        compaction_interval: Duration::from_secs(3600),
        ..fast_jobs()
    };
    let (a, mut c) = agent(&e, jobs, None).await;
    topic(&e, "inc", None, &[("cleanup.policy", "compact")]).await;
    let t = e.metadata.get_topic("inc").await.unwrap().unwrap();
    let rec = |k: &str, v: &str| NewRecord {
        timestamp: now_ms(),
        key: Some(Bytes::from(k.to_string())),
        value: Some(Bytes::from(v.to_string())),
        headers: vec![],
    };
    for k in ["a", "b", "c", "d", "e"] {
        produce(&mut c, "inc", vec![rec(k, "1")]).await;
    }
    let objects = async || -> Vec<String> {
        e.metadata
            .segments(t.id, 0, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.object_key)
            .collect()
    };
    // Nothing to remove: a few runs rewrite nothing.
    let before = objects().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        objects().await,
        before,
        "no rewrite without superseded records"
    );
    // A new value of c supersedes one record of one segment.
    produce(&mut c, "inc", vec![rec("c", "2")]).await;
    eventually("c superseded", async || {
        read_all(&e, "inc").await.len() == 5
    })
    .await;
    let after = objects().await;
    assert_eq!(after.len(), 6);
    for i in [0, 1, 3, 4] {
        assert_eq!(after[i], before[i], "segment {i} is not rewritten");
    }
    assert_ne!(after[2], before[2], "the segment holding the old c is");
    a.shutdown().await.unwrap();
}

/// A commit stalls (before its transaction starts) longer than the GC
/// grace while the GC runs: its object is collected, so the commit must
/// fail as not written rather than acknowledge unreadable records.
async fn stalled_commit_past_the_gc_grace(
    metadata: Arc<dyn MetadataStore>,
    dir: tempfile::TempDir,
) {
    let store = open_object_store(
        &format!("file://{}", dir.path().join("objects").display()),
        &S3Options::default(),
    )
    .unwrap();
    let faulty = FaultyMetadata::new(metadata.clone());
    let e = Env {
        _dir: dir,
        metadata: faulty.clone(),
        store,
    };
    let jobs = JobsConfig {
        gc_grace: Duration::from_millis(500),
        ..fast_jobs()
    };
    let (a, mut c) = agent(&e, jobs, None).await;
    topic(&e, "stall", None, &[]).await;
    produce(&mut c, "stall", vec![value("before")]).await;
    let keys = async || -> Vec<String> {
        e.store
            .list(Some(&Path::from("objects")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap()
    };
    let known = keys().await;
    faulty.stall_commits(Duration::from_secs(3));
    let mut stalled_client = c.clone();
    let stalled = tokio::spawn(async move {
        let batch = RecordBatch::from_records(vec![value("stalled")])
            .encode()
            .unwrap();
        stalled_client
            .produce(pb::ProduceRequest {
                partitions: vec![pb::PartitionRecords {
                    topic: "stall".into(),
                    partition: 0,
                    records: batch,
                }],
            })
            .await
    });
    // The stalled flush's object is uploaded, then collected by the GC
    // while its commit still waits.
    let mut uploaded = None;
    eventually("the stalled object uploaded", async || {
        uploaded = keys().await.into_iter().find(|k| !known.contains(k));
        uploaded.is_some()
    })
    .await;
    let uploaded = uploaded.unwrap();
    eventually("the stalled object collected", async || {
        !keys().await.contains(&uploaded)
    })
    .await;
    assert!(!stalled.is_finished(), "the commit is still stalled");
    faulty.stall_commits(Duration::ZERO);
    let answer = stalled.await.unwrap();
    let acknowledged = match &answer {
        Ok(r) => r.get_ref().results[0].batches[0].error == 0,
        Err(_) => false,
    };
    let values: Vec<Bytes> = read_all(&e, "stall")
        .await
        .into_iter()
        .filter_map(|(_, _, v)| v)
        .collect();
    // Acknowledged records are readable (a fresh reader, from the object
    // store); records not acknowledged were not written.
    if acknowledged {
        assert_eq!(
            values,
            [
                Bytes::from_static(b"before"),
                Bytes::from_static(b"stalled")
            ]
        );
    } else {
        assert_eq!(values, [Bytes::from_static(b"before")], "{answer:?}");
    }
    // The producer retries: a new object, committed and readable.
    produce(&mut c, "stall", vec![value("retried")]).await;
    let values: Vec<Bytes> = read_all(&e, "stall")
        .await
        .into_iter()
        .filter_map(|(_, _, v)| v)
        .collect();
    assert_eq!(values.last(), Some(&Bytes::from_static(b"retried")));
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_stalled_past_the_gc_grace_fails_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = streamhouse_metadata::open(&format!(
        "sqlite://{}",
        dir.path().join("metadata.db").display()
    ))
    .await
    .unwrap();
    stalled_commit_past_the_gc_grace(metadata, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_stalled_past_the_gc_grace_fails_on_postgres() {
    let Some(url) = streamhouse_metadata::testing::postgres_url().await else {
        return;
    };
    let metadata = streamhouse_metadata::open(&url).await.unwrap();
    stalled_commit_past_the_gc_grace(metadata, tempfile::tempdir().unwrap()).await;
}
