//! The `streamhouse` binary as users run it: agents as separate processes
//! (killed with SIGKILL, stopped with SIGTERM) and the CLI commands.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use streamhouse_client::{
    AutoOffsetReset, Consumer, IsolationLevel, Producer, ProducerRecord, TopicPartition,
};
use streamhouse_core::RecordBatch;
use streamhouse_storage::{Reader, ReaderConfig, S3Options, open_object_store};

const BIN: &str = env!("CARGO_BIN_EXE_streamhouse");

struct AgentProcess {
    child: Child,
    address: String,
}

impl AgentProcess {
    /// Starts `streamhouse agent` on a free port with the stores in `dir`.
    fn start(dir: &std::path::Path, flush_ms: u32, extra: &[&str]) -> AgentProcess {
        let mut child = Command::new(BIN)
            .args([
                "agent",
                "--listen",
                "127.0.0.1:0",
                "--metadata",
                &format!("sqlite://{}", dir.join("metadata.db").display()),
                "--storage",
                &format!("file://{}", dir.join("objects").display()),
                "--linger-ms",
                &flush_ms.to_string(),
                "--heartbeat-ms",
                "200",
                "--kafka-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("STREAMHOUSE_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting streamhouse agent");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("agent prints its address")
            .to_string();
        assert!(
            line.contains("listening on"),
            "unexpected agent output {line:?}"
        );
        AgentProcess { child, address }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("STREAMHOUSE_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A Kafka connection to the agent of `dir` (the only one) that has been
/// answered, so the agent counts it.
async fn kafka_client(dir: &std::path::Path) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let metadata =
        streamhouse_metadata::open(&format!("sqlite://{}", dir.join("metadata.db").display()))
            .await
            .unwrap();
    let agents = metadata.list_agents(None).await.unwrap();
    let address = agents[0].kafka_address.clone().expect("a Kafka listener");
    let mut s = std::net::TcpStream::connect(address).unwrap();
    // ApiVersions v0: API key 18, version 0, correlation id 1, no client id.
    s.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
        .unwrap();
    let mut size = [0; 4];
    s.read_exact(&mut size).unwrap();
    let mut answer = vec![0; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut answer).unwrap();
    s
}

/// Every value of a topic with how often it is stored.
async fn stored_values(
    dir: &std::path::Path,
    topic: &str,
    partitions: u32,
) -> HashMap<String, usize> {
    let metadata =
        streamhouse_metadata::open(&format!("sqlite://{}", dir.join("metadata.db").display()))
            .await
            .unwrap();
    let store = open_object_store(
        &format!("file://{}", dir.join("objects").display()),
        &S3Options::default(),
    )
    .unwrap();
    let reader = Reader::new(store, metadata, None, ReaderConfig::default());
    let mut counts = HashMap::new();
    for p in 0..partitions {
        let mut at = 0;
        loop {
            let r = reader.read(topic, p, at, 1 << 20).await.unwrap();
            if r.batches.is_empty() {
                break;
            }
            for bytes in r.batches {
                let batch = RecordBatch::decode(&bytes).unwrap();
                for (offset, _, rec) in batch.iter() {
                    if offset >= at {
                        let v = String::from_utf8(rec.value.clone().unwrap().to_vec()).unwrap();
                        *counts.entry(v).or_insert(0) += 1;
                    }
                }
                at = batch.base_offset + i64::from(batch.last_offset_delta) + 1;
            }
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_an_agent_loses_no_acknowledged_record_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = AgentProcess::start(dir.path(), 2, &["--zone", "z1"]);
    let b = AgentProcess::start(dir.path(), 2, &["--zone", "z2"]);
    let (ok, _, err) = cli(&[
        "topic",
        "create",
        "t",
        "--partitions",
        "4",
        "-a",
        &b.address,
    ]);
    assert!(ok, "{err}");

    // The producer prefers agent A (its zone); A is killed mid-stream.
    let producer = Producer::builder()
        .bootstrap(a.address.clone())
        .bootstrap(b.address.clone())
        .zone("z1")
        .batch_size(20)
        .batch_timeout(Duration::from_millis(1))
        .request_timeout(Duration::from_secs(2))
        .retry_backoff(Duration::from_millis(20))
        .max_retries(30)
        .agent_refresh_interval(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..3000 {
        if i == 1000 {
            // Let some of the first thousand be acknowledged by A first.
            tokio::time::sleep(Duration::from_millis(50)).await;
            a.child.kill().unwrap();
            a.child.wait().unwrap();
        }
        let record = ProducerRecord::new("t", format!("r{i}")).key(format!("k{}", i % 50));
        deliveries.push(producer.send_record(record).await.unwrap());
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mut acked = Vec::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        d.await
            .unwrap_or_else(|e| panic!("record r{i} failed: {e}"));
        acked.push(format!("r{i}"));
    }
    producer.close().await.unwrap();

    let stored = stored_values(dir.path(), "t", 4).await;
    for v in &acked {
        assert_eq!(stored.get(v), Some(&1), "{v} must be stored exactly once");
    }
    assert_eq!(stored.len(), acked.len());
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_buffered_records_and_deregisters() {
    let dir = tempfile::tempdir().unwrap();
    // A long flush interval: records wait in the agent's buffer until the
    // shutdown flushes them.
    let mut agent = AgentProcess::start(dir.path(), 60_000, &[]);
    let (ok, _, err) = cli(&["topic", "create", "s", "-a", &agent.address]);
    assert!(ok, "{err}");
    let producer = Producer::builder()
        .bootstrap(agent.address.clone())
        .batch_timeout(Duration::from_millis(1))
        .max_retries(0)
        .build()
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..10 {
        deliveries.push(
            producer
                .send_record(ProducerRecord::new("s", format!("v{i}")))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.signal("-TERM");
    for d in deliveries {
        d.await.unwrap();
    }
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "agent exited with {status}");
    let stored = stored_values(dir.path(), "s", 1).await;
    assert_eq!(stored.len(), 10);
    let metadata = streamhouse_metadata::open(&format!(
        "sqlite://{}",
        dir.path().join("metadata.db").display()
    ))
    .await
    .unwrap();
    assert!(
        metadata.list_agents(None).await.unwrap().is_empty(),
        "deregistered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_and_produce_commands() {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), 2, &[]);
    let a = agent.address.as_str();
    let (ok, out, err) = cli(&[
        "topic",
        "create",
        "cli",
        "--partitions",
        "3",
        "--retention-ms",
        "60000",
        "--config",
        "cleanup.policy=compact",
        "-a",
        a,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("created topic cli with 3 partitions"), "{out}");
    let (ok, _, err) = cli(&["topic", "create", "cli", "-a", a]);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
    let (ok, _, err) = cli(&["topic", "create", "bad name", "-a", a]);
    assert!(!ok);
    assert!(err.contains("invalid topic name"), "{err}");

    let (ok, _, err) = cli(&[
        "produce", "cli", "one", "two", "three", "--key", "user1", "-a", a,
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("produced 3 records"), "{err}");
    // Standard input, one record per line, keys split off.
    let mut child = Command::new(BIN)
        .args([
            "produce",
            "cli",
            "--key-separator",
            ":",
            "--verbose",
            "-a",
            a,
        ])
        .env("STREAMHOUSE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"u1:a\nu2:b\nu3:c\nu4:d\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);

    let (ok, out, _) = cli(&["topic", "list", "-a", a]);
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("cli ") && l.contains(" 3 ") && l.contains("60000")),
        "{out}"
    );
    let (ok, out, _) = cli(&["topic", "describe", "cli", "-a", a]);
    assert!(ok);
    assert!(out.contains("config:     cleanup.policy=compact"), "{out}");
    let total: i64 = out
        .lines()
        .skip_while(|l| !l.contains("HIGH_WATERMARK"))
        .skip(1)
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 7, "{out}");

    // Alter: more partitions, retention forever, a config key.
    let (ok, out, err) = cli(&[
        "topic",
        "alter",
        "cli",
        "--partitions",
        "5",
        "--retention-forever",
        "--delete-config",
        "cleanup.policy",
        "-a",
        a,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("5 partitions, retention forever"), "{out}");
    let (ok, _, err) = cli(&["topic", "alter", "cli", "--partitions", "2", "-a", a]);
    assert!(!ok && err.contains("can only be added"), "{err}");
    let (ok, out, _) = cli(&["topic", "list", "--output", "json", "-a", a]);
    assert!(ok);
    assert!(out.contains("\"partitions\": 5"), "{out}");
    // Bulk produce from a file.
    let file = dir.path().join("lines.txt");
    std::fs::write(
        &file,
        (0..100).map(|i| format!("line{i}\n")).collect::<String>(),
    )
    .unwrap();
    let (ok, _, err) = cli(&["produce", "cli", "--file", file.to_str().unwrap(), "-a", a]);
    assert!(ok && err.contains("produced 100 records"), "{err}");
    // Agents and status, with a Kafka client and a native client (besides
    // the CLI's own connection) connected.
    let kafka = kafka_client(dir.path()).await;
    let native = streamhouse_client::Admin::connect(a).await.unwrap();
    let (ok, out, _) = cli(&["agents", "list", "-a", a]);
    assert!(ok && out.contains(a), "{out}");
    assert!(out.contains(" GRPC  KAFKA"), "{out}");
    let (ok, out, _) = cli(&["agents", "list", "--output", "json", "-a", a]);
    assert!(ok && out.contains("\"heartbeat_age_ms\""), "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        listed[0]["grpc_connections"].as_u64().unwrap() >= 2,
        "{out}"
    );
    assert_eq!(listed[0]["kafka_connections"], 1, "{out}");
    let (ok, out, _) = cli(&["status", "-a", a]);
    assert!(
        ok && out.contains("cli") && out.contains("1 live agent"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.contains(a) && !l.contains("live agent"))
        .unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells[2].parse::<u64>().unwrap() >= 2, "{row}");
    assert_eq!(cells[3], "1", "{row}");
    let (ok, out, _) = cli(&["topic", "describe", "cli", "-a", a]);
    assert!(ok && out.contains(", kafka 1 on agent "), "{out}");
    let (ok, out, _) = cli(&["status", "--output", "json", "-a", a]);
    assert!(ok, "{out}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["agents"][0]["kafka_connections"], 1, "{out}");
    drop(kafka);
    drop(native);

    let (ok, out, _) = cli(&["status", "--output", "json", "-a", a]);
    assert!(ok && out.contains("\"records\": 107"), "{out}");

    // Delete records: partition 0 up to its high watermark, never back,
    // never past it.
    let (ok, out, err) = cli(&[
        "topic",
        "delete-records",
        "cli",
        "--partition",
        "0",
        "-a",
        a,
    ]);
    assert!(ok, "{err}");
    let start: i64 = out
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(start > 0, "{out}");
    let (ok, out, _) = cli(&["topic", "describe", "cli", "-a", a]);
    assert!(ok);
    let row: Vec<i64> = out
        .lines()
        .skip_while(|l| !l.contains("HIGH_WATERMARK"))
        .nth(1)
        .unwrap()
        .split_whitespace()
        .take(3)
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(row, [0, start, start], "{out}");
    let (ok, out, _) = cli(&[
        "topic",
        "delete-records",
        "cli",
        "-p",
        "0",
        "--offset",
        "0",
        "-a",
        a,
    ]);
    assert!(
        ok && out.contains(&format!("starts at offset {start}")),
        "{out}"
    );
    let beyond = (start + 1).to_string();
    let (ok, _, err) = cli(&[
        "topic",
        "delete-records",
        "cli",
        "-p",
        "0",
        "--offset",
        &beyond,
        "-a",
        a,
    ]);
    assert!(!ok && err.contains("past the last stable offset"), "{err}");

    let (ok, out, _) = cli(&["topic", "delete", "cli", "-a", a]);
    assert!(ok && out.contains("deleted topic cli"));
    let (ok, _, err) = cli(&["topic", "describe", "cli", "-a", a]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, _, err) = cli(&["produce", "cli", "x", "-a", a]);
    assert!(!ok && err.contains("does not exist"), "{err}");

    // No agent there: a clear error and a non-zero exit.
    let (ok, _, err) = cli(&["topic", "list", "-a", "127.0.0.1:1"]);
    assert!(!ok);
    assert!(
        err.contains("cannot reach an agent at 127.0.0.1:1"),
        "{err}"
    );
    let (ok, _, err) = cli(&["produce", "cli", "x", "-a", "127.0.0.1:1"]);
    assert!(!ok);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_and_groups_commands() {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), 2, &[]);
    let a = agent.address.as_str();
    assert!(cli(&["topic", "create", "c", "--partitions", "2", "-a", a]).0);
    let (ok, _, err) = cli(&[
        "produce", "c", "v1", "v2", "v3", "--key", "k", "--header", "h=1", "-a", a,
    ]);
    assert!(ok, "{err}");

    let (ok, out, err) = cli(&[
        "consume",
        "c",
        "--from-beginning",
        "--show-key",
        "--show-headers",
        "--show-offset",
        "-a",
        a,
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("key=k")
            && lines[0].contains("headers=[h=1]")
            && lines[0].ends_with("v1"),
        "{out}"
    );
    let (ok, out, _) = cli(&["consume", "c", "--offset", "2", "--partition", "0", "-a", a]);
    let key_partition = if out.trim().is_empty() { 1 } else { 0 };
    assert!(ok);
    let (ok, out, _) = cli(&[
        "consume",
        "c",
        "--offset",
        "2",
        "--partition",
        &key_partition.to_string(),
        "-a",
        a,
    ]);
    assert!(ok);
    assert_eq!(out.trim(), "v3");
    let (ok, out, _) = cli(&["consume", "c", "--from-beginning", "--max", "2", "-a", a]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2);

    // A group reads everything once and commits.
    let (ok, out, err) = cli(&[
        "consume",
        "c",
        "--group",
        "readers",
        "--from-beginning",
        "-a",
        a,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3);
    let (ok, out, _) = cli(&["consume", "c", "--group", "readers", "-a", a]);
    assert!(ok);
    assert_eq!(out.lines().count(), 0, "nothing new for the group");
    let (ok, out, _) = cli(&["groups", "list", "-a", a]);
    assert!(ok && out.contains("readers"), "{out}");
    let (ok, out, _) = cli(&["groups", "describe", "readers", "-a", a]);
    assert!(ok);
    let committed: i64 = out
        .lines()
        .filter(|l| l.starts_with("c "))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(committed, 3, "{out}");

    // Reset to the beginning: the group reads everything again.
    let (ok, out, err) = cli(&[
        "groups",
        "reset-offsets",
        "readers",
        "--topic",
        "c",
        "--to-earliest",
        "-a",
        a,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("c/0 -> 0"), "{out}");
    let (ok, out, _) = cli(&["consume", "c", "--group", "readers", "-a", a]);
    assert!(ok);
    assert_eq!(out.lines().count(), 3);
    let (ok, _, err) = cli(&[
        "groups",
        "reset-offsets",
        "readers",
        "--topic",
        "c",
        "--to-offset",
        "99",
        "-a",
        a,
    ]);
    assert!(!ok && err.contains("outside"), "{err}");
    let (ok, out, _) = cli(&["groups", "delete", "readers", "-a", a]);
    assert!(ok && out.contains("deleted group readers"));
    let (ok, _, err) = cli(&["groups", "describe", "readers", "-a", a]);
    assert!(!ok && err.contains("does not exist"), "{err}");
}

/// A copier process (`streamhouse copy`) against `agent`.
fn copier(agent: &str, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args([
            "copy",
            "src",
            "dst",
            "--group",
            "copiers",
            "--transactional-id",
            "copier-1",
            "--session-timeout-ms",
            "800",
            "--max-records-per-transaction",
            "20",
            "-a",
            agent,
        ])
        .args(extra)
        .env("STREAMHOUSE_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_is_exactly_once_through_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let a = AgentProcess::start(dir.path(), 2, &["--group-heartbeat-ms", "100"]);
    let mut b = AgentProcess::start(dir.path(), 2, &["--group-heartbeat-ms", "100"]);
    for topic in ["src", "dst"] {
        let (ok, _, err) = cli(&[
            "topic",
            "create",
            topic,
            "--partitions",
            "4",
            "-a",
            &a.address,
        ]);
        assert!(ok, "{err}");
    }
    // Input keeps arriving while copiers are killed, so every copier has
    // work in flight when it dies.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (address, stop) = (a.address.clone(), stop.clone());
        tokio::spawn(async move {
            let producer = Producer::builder()
                .bootstrap(address)
                .build()
                .await
                .unwrap();
            let mut written = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut pending = Vec::new();
                for _ in 0..50 {
                    let r = ProducerRecord::new("src", format!("r{written}"))
                        .key(format!("k{}", written % 50));
                    pending.push(producer.send_record(r).await.unwrap());
                    written += 1;
                }
                for d in pending {
                    d.await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            producer.close().await.unwrap();
            written
        })
    };
    // Kill the copier at random points, 20 times; every fifth time kill an
    // agent too and start a new one in its place.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut random = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for round in 0..20 {
        let agent = if round % 2 == 0 {
            a.address.clone()
        } else {
            b.address.clone()
        };
        let mut child = copier(&agent, &[]);
        tokio::time::sleep(Duration::from_millis(150 + random(400))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        if round % 5 == 4 {
            b.child.kill().unwrap();
            b.child.wait().unwrap();
            b = AgentProcess::start(dir.path(), 2, &["--group-heartbeat-ms", "100"]);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let total = writer.await.unwrap();
    // The killed copiers committed some of the work in transactions.
    let admin = streamhouse_client::Admin::connect(a.address.clone())
        .await
        .unwrap();
    let progress: i64 = admin
        .describe_group("copiers")
        .await
        .unwrap()
        .offsets
        .iter()
        .map(|(_, o)| o)
        .sum();
    assert!(progress > 0, "no transaction committed before the kills");
    eprintln!("committed by killed copiers: {progress} of {total}");
    // Let the last copier finish the job.
    let status = copier(&a.address, &["--idle-exit-ms", "3000"])
        .wait()
        .unwrap();
    assert!(status.success(), "final copier exited with {status}");

    // read_committed: every input record exactly once.
    let consumer = Consumer::builder()
        .bootstrap(a.address.clone())
        .assign((0..4).map(|p| TopicPartition::new("dst", p)))
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .isolation_level(IsolationLevel::ReadCommitted)
        .build()
        .await
        .unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut idle = 0;
    while tokio::time::Instant::now() < deadline && idle < 10 {
        let records = consumer.poll(Duration::from_millis(100)).await.unwrap();
        idle = if records.is_empty() { idle + 1 } else { 0 };
        for r in records {
            *counts
                .entry(String::from_utf8(r.value.unwrap().to_vec()).unwrap())
                .or_default() += 1;
        }
    }
    consumer.close().await.unwrap();
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "{} duplicated, e.g. {:?}",
        duplicated.len(),
        duplicated.first()
    );
    let missing: Vec<_> = (0..total)
        .map(|i| format!("r{i}"))
        .filter(|v| !counts.contains_key(v))
        .collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    drop(b);
}

#[test]
fn passwords_in_urls_stay_out_of_help_and_errors() {
    let secret = "postgres://app:s3cret-pw@127.0.0.1:1/x";
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_streamhouse"))
        .args(["agent", "--help"])
        .env("STREAMHOUSE_METADATA", secret)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--metadata"), "{help}");
    assert!(!help.contains("s3cret-pw"), "{help}");
    // A URL the store cannot parse is quoted without its password.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamhouse"))
        .args(["agent", "--listen", "127.0.0.1:0", "--kafka-listen", "off"])
        .env(
            "STREAMHOUSE_METADATA",
            "postgres://app:s3cret-pw@db:notaport/x",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("postgres://app:***@db"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}
