//! Kafka consumer groups with real clients: librdkafka members
//! (`fixtures/kafka/group_member.py`, confluent-kafka, with the interpreter
//! in `STREAMHOUSE_KAFKA_PYTHON`; under `CI=true` a missing interpreter or
//! client fails) against an in-process agent, while the native producer
//! writes continuously.
//!
//! - three members of a group: one closes (SIGTERM), one is killed
//!   (SIGKILL), one joins late; every record produced is received, a
//!   record is received twice only when the killed member had received
//!   it, and no two members ever held a partition at the same time (from
//!   the assignment and revocation callbacks and the records received);
//!   a member started once everything stopped resumes from the committed
//!   offsets. Run for `group.protocol=consumer` (KIP-848) and, once classic
//!   groups are served, for the classic protocol with `cooperative-sticky`.
//! - a native Rust consumer and a librdkafka KIP-848 member in one group
//!   share its partitions and together receive every record.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use streamhouse_client::{Admin, AutoOffsetReset, Consumer, Producer, ProducerRecord};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

mod support;
use support::kafka::{Cluster, python};

const PARTITIONS: u32 = 3;
const TOPIC: &str = "orders";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// An in-process agent whose group sessions last 6 s, with topic
/// [`TOPIC`].
async fn cluster() -> Cluster {
    let cluster = Cluster::start_with(PARTITIONS, |c| {
        c.kafka_group_session_timeout = Duration::from_secs(6);
    })
    .await;
    Admin::connect(cluster.grpc())
        .await
        .unwrap()
        .create_topic(TOPIC, PARTITIONS, None, HashMap::new())
        .await
        .unwrap();
    cluster
}

/// Every event the members printed, in arrival order.
type Events = Arc<Mutex<Vec<Value>>>;

/// One running `group_member.py`.
struct Member {
    name: String,
    child: Child,
    reader: tokio::task::JoinHandle<()>,
}

impl Member {
    fn start(
        python: &str,
        cluster: &Cluster,
        group: &str,
        name: &str,
        protocol: &str,
        strategy: Option<&str>,
        events: &Events,
    ) -> Member {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/kafka/group_member.py"
        );
        let args = json!({
            "bootstrap": cluster.kafka(), "group": group, "topic": TOPIC, "member": name,
            "protocol": protocol, "strategy": strategy, "commit": "sync",
            // librdkafka debug contexts for the member, e.g. `cgrp`.
            "debug": std::env::var("STREAMHOUSE_KAFKA_DEBUG").ok(),
        });
        let mut child = tokio::process::Command::new(python)
            .args([script, &args.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let events = events.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
                events.lock().unwrap().push(v);
            }
        });
        Member {
            name: name.to_string(),
            child,
            reader,
        }
    }

    /// SIGTERM: the member closes (revoking, committing, leaving).
    async fn close(mut self) {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit on SIGTERM", self.name))
            .unwrap();
        assert!(status.success(), "{}: {status}", self.name);
        self.reader.await.unwrap();
    }

    /// SIGKILL; the time it died.
    async fn kill(mut self) -> f64 {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        let at = now();
        self.reader.await.unwrap();
        at
    }
}

/// Produces to every partition in turn until stopped; the (partition,
/// offset) of every record delivered.
fn produce(cluster: &Cluster, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<(u32, i64)>> {
    let addr = cluster.grpc();
    tokio::spawn(async move {
        let producer = Producer::builder().bootstrap(addr).build().await.unwrap();
        let mut deliveries = Vec::new();
        let mut i = 0u32;
        while !stop.load(Ordering::SeqCst) {
            let mut record = ProducerRecord::new(TOPIC, format!("r{i}"));
            record.partition = Some(i % PARTITIONS);
            deliveries.push(producer.send_record(record).await.unwrap());
            i += 1;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        let mut out = Vec::new();
        for d in deliveries {
            let d = d.await.unwrap();
            out.push((d.partition, d.offset));
        }
        producer.close().await.unwrap();
        out
    })
}

/// Waits until `done` holds for the events, or panics after `secs`.
async fn wait_for(events: &Events, secs: u64, what: &str, done: impl Fn(&[Value]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if done(&events.lock().unwrap()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn event_of<'a>(v: &'a Value, member: &str, event: &str) -> Option<&'a Value> {
    (v["member"] == member && v["event"] == event).then_some(v)
}

fn received(events: &[Value]) -> Vec<(String, u32, i64, f64)> {
    events
        .iter()
        .filter(|v| v["event"] == "record")
        .map(|v| {
            (
                v["member"].as_str().unwrap().to_string(),
                v["partition"].as_u64().unwrap() as u32,
                v["offset"].as_i64().unwrap(),
                v["ts"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Checks that no two members held one partition at the same time. A
/// member holds a partition from its assignment event to its revocation
/// (or loss) event, or to `ends[member]` (when it was killed or stopped)
/// if none came; every record a member received must fall in one of its
/// holdings of that partition. Works for any protocol whose callbacks
/// report incremental or eager changes (eager revocations list every
/// partition held). Returns the holdings, per partition.
fn check_ownership(
    protocol: &str,
    events: &[Value],
    ends: &HashMap<String, f64>,
) -> BTreeMap<u32, Vec<(String, f64, f64)>> {
    let mut open: HashMap<(String, u32), f64> = HashMap::new();
    let mut held: BTreeMap<u32, Vec<(String, f64, f64)>> = BTreeMap::new();
    for v in events {
        let member = v["member"].as_str().unwrap().to_string();
        let ts = v["ts"].as_f64().unwrap();
        let partitions = || {
            v["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap() as u32)
        };
        match v["event"].as_str().unwrap() {
            "assign" => {
                for p in partitions() {
                    let before = open.insert((member.clone(), p), ts);
                    assert!(before.is_none(), "{protocol}: {member} assigned {p} twice");
                }
            }
            "revoke" | "lost" => {
                for p in partitions() {
                    let from = open.remove(&(member.clone(), p)).unwrap_or_else(|| {
                        panic!("{protocol}: {member} gave up {p} it did not hold")
                    });
                    held.entry(p).or_default().push((member.clone(), from, ts));
                }
            }
            _ => {}
        }
    }
    for ((member, p), from) in open {
        let end = ends.get(&member).copied().unwrap_or(f64::INFINITY);
        held.entry(p).or_default().push((member, from, end));
    }
    for (p, holdings) in &held {
        for (i, a) in holdings.iter().enumerate() {
            for b in &holdings[i + 1..] {
                assert!(
                    a.0 == b.0 || a.2 <= b.1 || b.2 <= a.1,
                    "{protocol}: partition {p} held by {a:?} and {b:?} at once"
                );
            }
        }
    }
    for (member, p, offset, ts) in received(events) {
        assert!(
            held.get(&p).is_some_and(|h| h
                .iter()
                .any(|(m, from, to)| *m == member && *from <= ts && ts <= *to)),
            "{protocol}: {member} received {p}/{offset} at {ts} without holding {p}"
        );
    }
    held
}

async fn committed(cluster: &Cluster, group: &str) -> BTreeMap<u32, i64> {
    let info = Admin::connect(cluster.grpc())
        .await
        .unwrap()
        .describe_group(group)
        .await
        .unwrap();
    info.offsets
        .into_iter()
        .filter(|(tp, _)| tp.topic == TOPIC)
        .map(|(tp, o)| (tp.partition, o))
        .collect()
}

async fn three_members(protocol: &str, strategy: Option<&str>) {
    let Some(python) = python() else { return };
    let cluster = cluster().await;
    let group = format!("three-{protocol}");
    let events: Events = Arc::default();
    let start =
        |name: &str| Member::start(&python, &cluster, &group, name, protocol, strategy, &events);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(&cluster, stop.clone());
    let a = start("a");
    let b = start("b");
    wait_for(&events, 60, "a and b to receive records", |e| {
        ["a", "b"].iter().all(|m| {
            e.iter()
                .filter(|v| event_of(v, m, "record").is_some())
                .count()
                > 10
        })
    })
    .await;
    let c = start("c");
    wait_for(&events, 60, "c to be assigned a partition", |e| {
        e.iter().any(|v| {
            event_of(v, "c", "assign")
                .is_some_and(|v| !v["partitions"].as_array().unwrap().is_empty())
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.close().await;
    let stopped_a = now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = b.kill().await;
    let d = start("d");
    // d joins; b's partitions move once its session expires.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::SeqCst);
    let produced = producer.await.unwrap();
    let wanted: BTreeSet<(u32, i64)> = produced.iter().copied().collect();
    assert_eq!(wanted.len(), produced.len());
    wait_for(&events, 90, "every record to be received", |e| {
        let got: BTreeSet<(u32, i64)> = received(e).iter().map(|r| (r.1, r.2)).collect();
        wanted.is_subset(&got)
    })
    .await;
    c.close().await;
    let stopped_c = now();
    d.close().await;
    let stopped_d = now();
    let events_now = events.lock().unwrap().clone();
    // Duplicates only of records the killed member had received.
    let mut receivers: BTreeMap<(u32, i64), Vec<(String, f64)>> = BTreeMap::new();
    for (m, p, o, ts) in received(&events_now) {
        receivers.entry((p, o)).or_default().push((m, ts));
    }
    for ((p, o), who) in &receivers {
        if who.len() > 1 {
            // b received it, died before committing it, and one other
            // member received it again after the kill.
            assert!(
                who.iter().any(|(m, _)| m == "b")
                    && who.iter().filter(|(m, _)| m != "b").count() == 1
                    && who.iter().all(|(m, ts)| m == "b" || *ts > killed_at),
                "{protocol}: {p}/{o} received by {who:?} (b killed at {killed_at})"
            );
        }
    }
    let ends = HashMap::from([
        ("a".to_string(), stopped_a),
        ("b".to_string(), killed_at),
        ("c".to_string(), stopped_c),
        ("d".to_string(), stopped_d),
    ]);
    let held = check_ownership(protocol, &events_now, &ends);
    assert_eq!(held.len() as u32, PARTITIONS, "{held:?}");
    assert!(
        events_now
            .iter()
            .any(|v| event_of(v, "d", "record").is_some()),
        "{protocol}: the late member received nothing"
    );

    // Resuming: records written now are all a new member gets, nothing
    // below the committed offsets.
    let offsets = committed(&cluster, &group).await;
    assert_eq!(offsets.len() as u32, PARTITIONS, "{offsets:?}");
    for (p, o) in &offsets {
        let last = produced.iter().filter(|r| r.0 == *p).map(|r| r.1).max();
        assert_eq!(
            Some(*o - 1),
            last,
            "{protocol}: partition {p} committed {o}"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let more = produce(&cluster, stop.clone());
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::SeqCst);
    let more = more.await.unwrap();
    let e = start("e");
    let want_more: BTreeSet<(u32, i64)> = more.iter().copied().collect();
    wait_for(
        &events,
        60,
        "the new member to receive the new records",
        |ev| {
            let got: BTreeSet<(u32, i64)> = received(ev)
                .iter()
                .filter(|r| r.0 == "e")
                .map(|r| (r.1, r.2))
                .collect();
            want_more.is_subset(&got)
        },
    )
    .await;
    e.close().await;
    for (m, p, o, _) in received(&events.lock().unwrap()) {
        if m == "e" {
            assert!(
                o >= offsets[&p],
                "{protocol}: the restarted member read {p}/{o} below the committed {}",
                offsets[&p]
            );
        }
    }
    cluster.agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kip848_members_close_die_and_join() {
    three_members("consumer", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_classic_cooperative_members_close_die_and_join() {
    three_members("classic", Some("cooperative-sticky")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_and_librdkafka_members_share_a_group() {
    let Some(python) = python() else { return };
    let cluster = cluster().await;
    let group = "mixed";
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(&cluster, stop.clone());
    let native = Consumer::builder()
        .bootstrap(cluster.grpc())
        .group_id(group)
        .subscribe([TOPIC])
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .build()
        .await
        .unwrap();
    let events: Events = Arc::default();
    let member = Member::start(&python, &cluster, group, "k", "consumer", None, &events);
    let mut native_got: BTreeSet<(u32, i64)> = BTreeSet::new();
    // Until both members held partitions at once and both received
    // records.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut both = false;
    loop {
        for r in native.poll(Duration::from_millis(200)).await.unwrap() {
            native_got.insert((r.partition, r.offset));
        }
        let kafka_records = events
            .lock()
            .unwrap()
            .iter()
            .any(|v| v["event"] == "record");
        let native_parts = native.assignment();
        let kafka_parts = kafka_holdings(&events.lock().unwrap());
        if !native_parts.is_empty() && !kafka_parts.is_empty() {
            both = true;
        }
        if both && kafka_records && !native_got.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: native {} records, both members active: {both}",
            native_got.len()
        );
    }
    stop.store(true, Ordering::SeqCst);
    let produced: BTreeSet<(u32, i64)> = producer.await.unwrap().into_iter().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for r in native.poll(Duration::from_millis(200)).await.unwrap() {
            native_got.insert((r.partition, r.offset));
        }
        let kafka_got: BTreeSet<(u32, i64)> = received(&events.lock().unwrap())
            .iter()
            .map(|r| (r.1, r.2))
            .collect();
        let all: BTreeSet<(u32, i64)> = native_got.union(&kafka_got).copied().collect();
        if produced.is_subset(&all) {
            assert!(!native_got.is_empty() && !kafka_got.is_empty());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {:?}",
            produced.difference(&all).take(10).collect::<Vec<_>>()
        );
    }
    member.close().await;
    native.close().await.unwrap();
    cluster.agent.shutdown().await.unwrap();
}

/// The partitions the librdkafka member holds now, from its events.
fn kafka_holdings(events: &[Value]) -> BTreeSet<u32> {
    let mut held = BTreeSet::new();
    for v in events {
        let parts = || {
            v["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p.as_u64().unwrap() as u32)
        };
        match v["event"].as_str() {
            Some("assign") => held.extend(parts()),
            Some("revoke" | "lost") => {
                for p in parts() {
                    held.remove(&p);
                }
            }
            _ => {}
        }
    }
    held
}

/// The checker fails on two members holding one partition at once, and on
/// a record received outside its member's holdings.
#[test]
fn the_ownership_checker_catches_overlaps() {
    let ev = |m: &str, e: &str, ps: &[u32], ts: f64| json!({"member": m, "event": e, "partitions": ps, "ts": ts});
    let record = |m: &str, p: u32, ts: f64| json!({"member": m, "event": "record", "partition": p, "offset": 0, "ts": ts});
    let fine = vec![
        ev("a", "assign", &[0, 1], 1.0),
        record("a", 0, 1.5),
        ev("a", "revoke", &[1], 2.0),
        ev("b", "assign", &[1], 2.5),
        record("b", 1, 3.0),
    ];
    assert_eq!(check_ownership("t", &fine, &HashMap::new()).len(), 2);
    let overlapping = vec![ev("a", "assign", &[0], 1.0), ev("b", "assign", &[0], 2.0)];
    let caught = std::panic::catch_unwind(|| check_ownership("t", &overlapping, &HashMap::new()));
    assert!(caught.is_err());
    // a was killed at 2.0: b may take 0 after that, not before.
    let killed = HashMap::from([("a".to_string(), 2.0)]);
    let after_kill = vec![ev("a", "assign", &[0], 1.0), ev("b", "assign", &[0], 2.5)];
    check_ownership("t", &after_kill, &killed);
    let outside = vec![ev("a", "assign", &[0], 1.0), record("a", 0, 3.0)];
    let caught = std::panic::catch_unwind(|| check_ownership("t", &outside, &killed));
    assert!(caught.is_err());
}
