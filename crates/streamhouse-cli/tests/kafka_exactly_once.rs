//! Exactly-once with unmodified confluent-kafka (librdkafka): a
//! consume-transform-produce loop (`fixtures/kafka/eos.py`: a static
//! member of a classic `cooperative-sticky` group, committing its input
//! offsets with `send_offsets_to_transaction`, each transaction open
//! for at least 150 ms after its records are stored) killed with SIGKILL
//! twenty times at random points while input keeps arriving, through two
//! agent processes of which one is replaced now and then. A read_committed
//! reader then finds every input record in the output exactly once; a
//! read_uncommitted reader sees the aborted ones too.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use streamhouse_client::{Admin, Producer, ProducerRecord};
use tokio::io::AsyncBufReadExt;

mod support;
use support::kafka::{AgentProcess, python};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/kafka/eos.py");
const RECORDS: usize = 3_000;
const KILLS: usize = 20;
const PARTITIONS: u32 = 4;

/// A small xorshift generator: the kill points, reproducible by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The transform loop as a process; its committed transactions and
/// records are counted into `committed`.
fn transform(
    python: &str,
    bootstrap: &str,
    log: &std::path::Path,
    committed: &Arc<AtomicU64>,
) -> tokio::process::Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = tokio::process::Command::new(python)
        .args([SCRIPT, "transform", bootstrap, "eos-in", "eos-out"])
        .args(["eos-transform", "eos-group", "150"])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let committed = committed.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(n) = v["committed"].as_u64()
            {
                committed.fetch_add(n, Ordering::Relaxed);
            }
        }
    });
    child
}

/// The keys of every record of `topic` read at `isolation`.
async fn read(python: &str, bootstrap: &str, topic: &str, isolation: &str) -> Vec<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python)
            .args([SCRIPT, "read", bootstrap, topic, isolation, "3"])
            .output(),
    )
    .await
    .expect("the reader did not finish")
    .unwrap();
    assert!(
        out.status.success(),
        "reader failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transactional_loop_killed_twenty_times_outputs_every_record_once() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("transform.log");
    let a = AgentProcess::start(dir.path(), "agent-a");
    let mut b = AgentProcess::start(dir.path(), "agent-b");
    let admin = Admin::connect(&a.grpc).await.unwrap();
    for topic in ["eos-in", "eos-out"] {
        admin
            .create_topic(topic, PARTITIONS, None, Default::default())
            .await
            .unwrap();
    }
    let started = Instant::now();
    // Input keeps arriving throughout: RECORDS records over about 20 s.
    let producing = tokio::spawn({
        let grpc = a.grpc.clone();
        async move {
            let producer = Producer::builder()
                .bootstrap(grpc)
                .idempotence(true)
                .build()
                .await
                .unwrap();
            let mut deliveries = Vec::with_capacity(RECORDS);
            for i in 0..RECORDS {
                let record =
                    ProducerRecord::new("eos-in", format!("in-{i}")).key(format!("k{}", i % 97));
                deliveries.push(producer.send_record(record).await.unwrap());
                if i % 50 == 49 {
                    tokio::time::sleep(Duration::from_millis(330)).await;
                }
            }
            for d in deliveries {
                d.await.unwrap();
            }
            producer.close().await.unwrap();
        }
    });

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill points seed {seed}");
    let mut rng = Rng(seed);
    let committed = Arc::new(AtomicU64::new(0));
    let bootstrap = |b: &AgentProcess| format!("{},{}", a.kafka, b.kafka);
    let mut child = transform(&python, &bootstrap(&b), &log, &committed);
    let mut replaced = 0;
    let mut exited_alone = Vec::new();
    for kill in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(400 + rng.below(1600))).await;
        if let Some(status) = child.try_wait().unwrap() {
            exited_alone.push(status);
        }
        child.kill().await.unwrap();
        if kill % 7 == 0 {
            // Replace agent b: SIGKILL, then a new process with its id.
            b.kill();
            b = AgentProcess::start(dir.path(), "agent-b");
            replaced += 1;
        }
        child = transform(&python, &bootstrap(&b), &log, &committed);
    }
    producing.await.unwrap();

    // The last instance catches up: the group's committed offsets reach
    // the end of the input.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let offsets = admin.describe_group("eos-group").await.unwrap().offsets;
        let done: i64 = offsets.iter().map(|(_, o)| o).sum();
        if done == RECORDS as i64 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            exited_alone.push(status);
            child = transform(&python, &bootstrap(&b), &log, &committed);
        }
        assert!(
            Instant::now() < deadline,
            "the transform stalled at {done} of {RECORDS}; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    child.kill().await.unwrap();
    let elapsed = started.elapsed();

    let mut expected: Vec<String> = (0..RECORDS).map(|i| format!("in-{i}")).collect();
    expected.sort();
    let mut exactly = read(&python, &a.kafka, "eos-out", "read_committed").await;
    exactly.sort();
    let duplicates = exactly.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(duplicates, 0, "records output twice at read_committed");
    assert_eq!(
        exactly, expected,
        "every input record once at read_committed"
    );
    let mut all = read(&python, &b.kafka, "eos-out", "read_uncommitted").await;
    all.sort();
    all.dedup();
    assert_eq!(all, expected, "read_uncommitted sees only input records");
    let uncommitted = read(&python, &b.kafka, "eos-out", "read_uncommitted").await;
    let aborted = uncommitted.len() - RECORDS;
    eprintln!(
        "exactly once: {RECORDS} records, {KILLS} SIGKILLs, agent b replaced {replaced} times, \
         {} records in aborted transactions seen at read_uncommitted, {} exits on its own \
         ({exited_alone:?}), {} records committed by the loop, {:.1} s",
        aborted,
        exited_alone.len(),
        committed.load(Ordering::Relaxed),
        elapsed.as_secs_f64()
    );
    assert!(
        aborted > 0,
        "twenty kills mid-transaction left no aborted records for read_uncommitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zombie_producer_is_fenced_on_produce_commit_and_offsets() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = AgentProcess::start(dir.path(), "agent-a");
    Admin::connect(&a.grpc)
        .await
        .unwrap()
        .create_topic("zombie", 1, None, Default::default())
        .await
        .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&python)
            .args([SCRIPT, "zombie", &a.kafka, "zombie"])
            .output(),
    )
    .await
    .expect("the zombie script did not finish")
    .unwrap();
    assert!(
        out.status.success(),
        "zombie script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fenced: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fenced["commit"]["fatal"], true, "{fenced}");
    for what in ["commit", "offsets"] {
        let error = &fenced[what];
        assert!(
            error["name"].as_str().unwrap().contains("FENCED"),
            "{what}: {fenced}"
        );
    }
    assert_eq!(
        read(&python, &a.kafka, "zombie", "read_committed").await,
        ["new-1"]
    );
    let mut all = read(&python, &a.kafka, "zombie", "read_uncommitted").await;
    all.sort();
    assert_eq!(
        all,
        ["new-1", "old-1"],
        "the zombie's aborted record, nothing after"
    );
}
