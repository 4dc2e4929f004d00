//! Kafka classic consumer groups (JoinGroup/SyncGroup, client-side
//! assignors) with real clients against an in-process agent, driven by
//! `fixtures/kafka/classic_groups.py` with the interpreter in
//! `STREAMHOUSE_KAFKA_PYTHON` (under `CI=true` a missing interpreter,
//! client or kcat fails):
//!
//! - two kafka-python consumers of one group split a 3-partition topic and
//!   read every record exactly once between them, then commit;
//! - two confluent-kafka consumers with the cooperative-sticky assignor:
//!   one closes, the other ends up with every partition, no record lost;
//! - a kafka-python consumer SIGKILLed: once its session times out, the
//!   other member (which kept heartbeating) gets its partitions and reads
//!   their records;
//! - `kcat -G` consumes what was produced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use streamhouse_client::Admin;

mod support;
use support::kafka::{Cluster, kcat, python, run_kcat};

const PARTITIONS: u32 = 3;

/// Creates `name` with [`PARTITIONS`] partitions.
async fn topic(cluster: &Cluster, name: &str) {
    Admin::connect(&cluster.grpc())
        .await
        .unwrap()
        .create_topic(name, PARTITIONS, None, HashMap::new())
        .await
        .unwrap();
}

/// Runs one scenario of `classic_groups.py`; its JSON result.
async fn scenario(python: &str, name: &str, bootstrap: &str, topic: &str, count: usize) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/kafka/classic_groups.py"
    );
    let group = format!("{name}-group");
    let child = tokio::process::Command::new(python)
        .args([script, name, bootstrap, topic, &group, &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish"))
        .unwrap();
    assert!(
        out.status.success(),
        "{name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `[partition, offset, value]` records a consumer read.
fn read(v: &Value) -> Vec<(i64, i64, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap(),
                r[1].as_i64().unwrap(),
                r[2].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_python_consumers_split_a_topic_and_commit() {
    let Some(python) = python() else { return };
    let cluster = Cluster::start_with(PARTITIONS, |_| {}).await;
    topic(&cluster, "split").await;
    let count = 60;
    let r = scenario(
        &python,
        "kafka-python-split",
        &cluster.kafka(),
        "split",
        count,
    )
    .await;
    let c1 = read(&r["consumed"]["c1"]);
    let c2 = read(&r["consumed"]["c2"]);
    assert!(
        !c1.is_empty() && !c2.is_empty(),
        "one consumer read nothing"
    );
    let mut all: Vec<String> = c1.iter().chain(&c2).map(|(_, _, v)| v.clone()).collect();
    all.sort();
    let mut want: Vec<String> = (0..count).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(all, want, "every record exactly once between them");
    // Each consumer read only its own partitions.
    let parts = |rs: &[(i64, i64, String)]| rs.iter().map(|r| r.0).collect::<BTreeSet<_>>();
    assert!(parts(&c1).is_disjoint(&parts(&c2)));
    // Committed: the end of every partition (20 records each).
    let committed: BTreeMap<String, i64> = r["committed"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, o)| (p.clone(), o.as_i64().unwrap_or(-1)))
        .collect();
    assert_eq!(
        committed,
        BTreeMap::from([("0".into(), 20), ("1".into(), 20), ("2".into(), 20)])
    );
    cluster.agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confluent_cooperative_sticky_survivor_takes_every_partition() {
    let Some(python) = python() else { return };
    let cluster = Cluster::start_with(PARTITIONS, |_| {}).await;
    topic(&cluster, "coop").await;
    let count = 60;
    let r = scenario(
        &python,
        "confluent-cooperative",
        &cluster.kafka(),
        "coop",
        count,
    )
    .await;
    assert_eq!(r["final_assignment"], serde_json::json!([0, 1, 2]));
    let seen: BTreeSet<String> = read(&r["consumed"]["c1"])
        .into_iter()
        .chain(read(&r["consumed"]["c2"]))
        .map(|(_, _, v)| v)
        .collect();
    let want: BTreeSet<String> = (0..2 * count).map(|i| format!("v{i}")).collect();
    assert_eq!(seen, want, "no record lost");
    cluster.agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kcat_balanced_consumer_reads_what_was_produced() {
    let Some(kcat) = kcat() else { return };
    let cluster = Cluster::start_with(PARTITIONS, |_| {}).await;
    topic(&cluster, "kg").await;
    let b = cluster.kafka();
    let input: String = (0..30).map(|i| format!("line{i}\n")).collect();
    run_kcat(kcat, &["-b", &b, "-P", "-t", "kg"], &input).await;
    let out = run_kcat(
        kcat,
        &[
            "-b",
            &b,
            "-G",
            "kcat-group",
            "-X",
            "auto.offset.reset=earliest",
            "-e",
            "-q",
            "-f",
            "%s\n",
            "kg",
        ],
        "",
    )
    .await;
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("line{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    cluster.agent.shutdown().await.unwrap();
}

/// A `kafka-python-member` process and the JSON lines it prints.
struct MemberProcess {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl MemberProcess {
    fn start(python: &str, bootstrap: &str, topic: &str, group: &str) -> MemberProcess {
        use tokio::io::AsyncBufReadExt;
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/kafka/classic_groups.py"
        );
        let mut child = tokio::process::Command::new(python)
            .args([script, "kafka-python-member", bootstrap, topic, group, "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        MemberProcess { child, lines }
    }
}

/// What a member printed so far: its last assignment, the values it read.
#[derive(Default)]
struct Seen {
    assigned: BTreeSet<i64>,
    read: BTreeSet<String>,
}

impl Seen {
    fn drain(&mut self, m: &mut MemberProcess) {
        while let Ok(v) = m.lines.try_recv() {
            if let Some(a) = v["assigned"].as_array() {
                self.assigned = a.iter().map(|p| p.as_i64().unwrap()).collect();
            }
            if let Some(value) = v["read"][2].as_str() {
                self.read.insert(value.to_string());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_members_partitions_go_to_the_survivor() {
    let Some(python) = python() else { return };
    let Some(kcat) = kcat() else { return };
    let cluster = Cluster::start_with(PARTITIONS, |_| {}).await;
    topic(&cluster, "kill").await;
    let b = cluster.kafka();
    let mut want = BTreeSet::new();
    for p in 0..PARTITIONS {
        let input: String = (0..10).map(|i| format!("p{p}-{i}\n")).collect();
        want.extend((0..10).map(|i| format!("p{p}-{i}")));
        run_kcat(
            kcat,
            &["-b", &b, "-P", "-t", "kill", "-p", &p.to_string()],
            &input,
        )
        .await;
    }
    let mut survivor = MemberProcess::start(&python, &b, "kill", "kill-group");
    let mut victim = MemberProcess::start(&python, &b, "kill", "kill-group");
    let (mut s, mut v) = (Seen::default(), Seen::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        s.drain(&mut survivor);
        v.drain(&mut victim);
        if !s.assigned.is_empty()
            && !v.assigned.is_empty()
            && s.assigned.is_disjoint(&v.assigned)
            && s.assigned.len() + v.assigned.len() == PARTITIONS as usize
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never split: {:?} {:?}",
            s.assigned,
            v.assigned
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let orphaned = v.assigned.clone();
    victim.child.start_kill().unwrap();
    victim.child.wait().await.unwrap();
    // After the victim's 6 s session, the survivor holds everything and
    // reads the orphaned partitions' records.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        s.drain(&mut survivor);
        if s.assigned.len() == PARTITIONS as usize && s.read == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the survivor holds {:?} (the victim had {orphaned:?}) and read {} of {}",
            s.assigned,
            s.read.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    survivor.child.start_kill().unwrap();
    cluster.agent.shutdown().await.unwrap();
}
