//! Real Kafka clients against an agent's Kafka listener: kafka-python and
//! confluent-kafka (librdkafka), driven by `fixtures/kafka/clients.py`
//! with the interpreter in `STREAMHOUSE_KAFKA_PYTHON` (set by
//! `scripts/test`; under `CI=true` a missing interpreter or client fails).
//!
//! - every codec, keys, null keys and values, headers, timestamps, acks
//!   0/1/all, idempotence on: what each client produced is consumed back
//!   exactly by both clients and by the native (gRPC) consumer, keyed
//!   records on the partitions the native partitioner picks (murmur2);
//! - records of the native producer are fetched over Kafka with the same
//!   offsets, keys, values, headers and timestamps;
//! - metadata (brokers, auto-created topics) and list offsets (earliest,
//!   latest, by timestamp, largest timestamp);
//! - an idempotent librdkafka producer streaming through two agent
//!   processes, one killed with SIGKILL and restarted: every record stored
//!   exactly once (and through two in-process agents, one shut down);
//! - the round trip again on PostgreSQL + S3;
//! - kcat `-L`, `-P` (keys, headers) and `-C -e`;
//! - admin: topics created with configs, configs described and altered
//!   (incrementally and whole), partitions added, the cluster described,
//!   topics deleted, standalone offset commits read back, all seen the same
//!   over gRPC.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use streamhouse_agent::{Agent, AgentConfig};
use streamhouse_client::{
    Admin, AutoOffsetReset, Consumer, Producer, ProducerRecord, TopicPartition,
};
use tokio::io::AsyncWriteExt;

mod support;
use support::kafka::{AgentProcess, Cluster, kcat, python, run_kcat, shared_stores};

const PARTITIONS: u32 = 3;
const CLIENTS: [&str; 2] = ["kafka-python", "confluent"];
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

impl Cluster {
    /// An agent on a fresh PostgreSQL schema and S3 prefix; `None` (skip)
    /// without those services outside CI.
    async fn on_postgres_and_s3() -> Option<Cluster> {
        use streamhouse_metadata::testing::{postgres_url, service_env};
        let endpoint = service_env("STREAMHOUSE_TEST_S3_ENDPOINT")?;
        let bucket = service_env("STREAMHOUSE_TEST_S3_BUCKET")?;
        let metadata = streamhouse_metadata::open(&postgres_url().await?)
            .await
            .unwrap();
        let prefix = format!("kafka-{}", ulid_like());
        let store = streamhouse_storage::open_object_store(
            &format!("s3://{bucket}/{prefix}"),
            &streamhouse_storage::S3Options {
                endpoint: Some(endpoint),
                region: Some("us-east-1".into()),
                allow_http: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        let mut config = AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            kafka_listen: Some("127.0.0.1:0".parse().unwrap()),
            kafka_default_partitions: PARTITIONS,
            ..AgentConfig::default()
        };
        config.pipeline.linger = Duration::from_millis(2);
        let agent = Agent::start_with(config, metadata, store).await.unwrap();
        Some(Cluster {
            agent,
            dir: tempfile::tempdir().unwrap(),
        })
    }
}

/// An in-process agent on SQLite, auto-creating topics of
/// [`PARTITIONS`] partitions.
async fn cluster() -> Cluster {
    Cluster::start_with(PARTITIONS, |_| {}).await
}

/// Runs `jobs` with one client; its results, one per job.
async fn run(python: &str, client: &str, bootstrap: &str, jobs: Value) -> Vec<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/kafka/clients.py"
    );
    let mut child = tokio::process::Command::new(python)
        .args([script, client, bootstrap])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(jobs.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{client} did not finish"))
        .unwrap();
    assert!(
        out.status.success(),
        "{client} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(results) => results,
        other => panic!("unexpected output {other}"),
    }
}

/// Records with keys (some null), values (one null), headers (on every
/// other record) and distinct timestamps.
fn records(tag: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "key": (i % 4 != 0).then(|| format!("key-{}", i % 7)),
                "value": (i != 3).then(|| format!("{tag} value {i} {}", "x".repeat(i * 13))),
                "headers": if i % 2 == 1 {
                    json!([["trace", format!("t{i}")], ["empty", ""]])
                } else {
                    json!([])
                },
                "timestamp": 1_700_000_000_000i64 + i as i64 * 1000,
            })
        })
        .collect()
}

/// The produce job and the expected records once consumed: with the
/// offsets the producer was told, or none for acks=0.
fn produce_job(topic: &str, codec: &str, acks: &str, idempotent: bool, recs: &[Value]) -> Value {
    json!({"op": "produce", "topic": topic, "codec": codec, "acks": acks,
           "idempotent": idempotent, "records": recs})
}

fn consume_job(topic: &str, count: usize) -> Value {
    json!({"op": "consume", "topic": topic, "partitions": (0..PARTITIONS).collect::<Vec<_>>(),
           "count": count})
}

/// `sent` with the partitions and offsets of `delivered`, sorted by
/// partition and offset.
fn placed(sent: &[Value], delivered: &Value) -> Vec<Value> {
    let delivered = delivered.as_array().unwrap();
    assert_eq!(sent.len(), delivered.len());
    let mut out: Vec<Value> = sent
        .iter()
        .zip(delivered)
        .map(|(r, d)| {
            let mut r = r.clone();
            r["partition"] = d["partition"].clone();
            r["offset"] = d["offset"].clone();
            r
        })
        .collect();
    out.sort_by_key(|r| (r["partition"].as_i64(), r["offset"].as_i64()));
    out
}

/// `records` without offsets (acks=0 tells none), in a canonical order.
fn contents(records: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = records
        .iter()
        .map(|r| json!([r["key"], r["value"], r["headers"], r["timestamp"]]).to_string())
        .collect();
    out.sort();
    out
}

fn expected_partition(key: &Value) -> Option<i64> {
    key.as_str().map(|k| {
        i64::from(streamhouse_client::partitioner::partition_for_key(
            k.as_bytes(),
            PARTITIONS,
        ))
    })
}

/// Every record of `topic`, read with the native (gRPC) consumer.
async fn native_consume(cluster: &Cluster, topic: &str, count: usize) -> Vec<Value> {
    let consumer = Consumer::builder()
        .bootstrap(cluster.grpc())
        .assign((0..PARTITIONS).map(|p| TopicPartition::new(topic, p)))
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .build()
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < count && tokio::time::Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let text = |b: &Option<bytes::Bytes>| {
                b.as_ref().map(|b| String::from_utf8(b.to_vec()).unwrap())
            };
            out.push(json!({
                "partition": r.partition,
                "offset": r.offset,
                "key": text(&r.key),
                "value": text(&r.value),
                "headers": r.headers.iter().map(|h| json!([
                    h.key, String::from_utf8(h.value.as_ref().map(|v| v.to_vec()).unwrap_or_default()).unwrap()
                ])).collect::<Vec<_>>(),
                "timestamp": r.timestamp,
            }));
        }
    }
    consumer.close().await.unwrap();
    out.sort_by_key(|r| (r["partition"].as_i64(), r["offset"].as_i64()));
    out
}

/// A name no other test run uses.
fn ulid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_clients_produce_every_codec_and_consume_exactly() {
    let Some(python) = python() else { return };
    every_codec_round_trip(&python, cluster().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_clients_on_postgres_and_s3() {
    let Some(python) = python() else { return };
    let Some(cluster) = Cluster::on_postgres_and_s3().await else {
        return;
    };
    every_codec_round_trip(&python, cluster).await;
}

async fn every_codec_round_trip(python: &str, cluster: Cluster) {
    let python = python.to_string();
    let kafka = cluster.kafka();
    // Per client and codec: an idempotent acks=all producer, and one with
    // acks 1 or 0 (idempotence needs acks=all).
    let mut produced: Vec<(String, Vec<Value>, bool)> = Vec::new();
    for client in CLIENTS {
        let mut jobs = Vec::new();
        let mut topics = Vec::new();
        for (i, codec) in CODECS.iter().enumerate() {
            let recs = records(&format!("{client} {codec}"), 40);
            let idem_topic = format!("{client}-{codec}-idempotent");
            jobs.push(produce_job(&idem_topic, codec, "all", true, &recs));
            topics.push((idem_topic, recs.clone()));
            let acks = ["1", "0"][i % 2];
            let plain_topic = format!("{client}-{codec}-acks{acks}");
            jobs.push(produce_job(&plain_topic, codec, acks, false, &recs));
            topics.push((plain_topic, recs));
        }
        let results = run(&python, client, &kafka, Value::Array(jobs)).await;
        for ((topic, recs), delivered) in topics.into_iter().zip(results) {
            let acks0 = topic.ends_with("acks0");
            if acks0 {
                produced.push((topic, recs, false));
                continue;
            }
            let expected = placed(&recs, &delivered);
            for r in &expected {
                if let Some(p) = expected_partition(&r["key"]) {
                    assert_eq!(r["partition"].as_i64(), Some(p), "{topic}: {r}");
                }
            }
            produced.push((topic, expected, true));
        }
    }
    // Everything is read back by both clients, exactly.
    for reader in CLIENTS {
        let jobs: Vec<Value> = produced
            .iter()
            .map(|(topic, recs, _)| consume_job(topic, recs.len()))
            .collect();
        let results = run(&python, reader, &kafka, Value::Array(jobs)).await;
        for ((topic, expected, with_offsets), consumed) in produced.iter().zip(results) {
            let consumed = consumed.as_array().unwrap();
            if *with_offsets {
                assert_eq!(consumed, expected, "{reader} reading {topic}");
            } else {
                assert_eq!(
                    contents(consumed),
                    contents(expected),
                    "{reader} reading {topic}"
                );
                for r in consumed {
                    if let Some(p) = expected_partition(&r["key"]) {
                        assert_eq!(r["partition"].as_i64(), Some(p), "{topic}: {r}");
                    }
                }
            }
        }
    }
    // And by the native consumer, with the same offsets.
    for (topic, expected, with_offsets) in produced.iter().filter(|(t, ..)| t.contains("zstd")) {
        let native = native_consume(&cluster, topic, expected.len()).await;
        if *with_offsets {
            assert_eq!(&native, expected, "native consumer reading {topic}");
        } else {
            assert_eq!(
                contents(&native),
                contents(expected),
                "native reading {topic}"
            );
        }
    }
    cluster.agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn native_records_are_fetched_over_kafka_unchanged() {
    let Some(python) = python() else { return };
    let cluster = cluster().await;
    Admin::connect(&cluster.grpc())
        .await
        .unwrap()
        .create_topic("native", PARTITIONS, None, HashMap::new())
        .await
        .unwrap();
    let producer = Producer::builder()
        .bootstrap(cluster.grpc())
        .idempotence(true)
        .build()
        .await
        .unwrap();
    let sent = records("native", 60);
    let mut deliveries = Vec::new();
    for r in &sent {
        let mut record = ProducerRecord::new("native", bytes::Bytes::new())
            .timestamp(r["timestamp"].as_i64().unwrap());
        record.value = r["value"]
            .as_str()
            .map(|v| bytes::Bytes::from(v.to_string()));
        if let Some(k) = r["key"].as_str() {
            record = record.key(k.to_string());
        }
        for h in r["headers"].as_array().unwrap() {
            record = record.header(
                h[0].as_str().unwrap().to_string(),
                h[1].as_str().unwrap().to_string(),
            );
        }
        deliveries.push(producer.send_record(record).await.unwrap());
    }
    let mut delivered = Vec::new();
    for d in deliveries {
        let d = d.await.unwrap();
        delivered.push(json!({"partition": d.partition, "offset": d.offset}));
    }
    producer.close().await.unwrap();
    let expected = placed(&sent, &Value::Array(delivered));
    for r in &expected {
        if let Some(p) = expected_partition(&r["key"]) {
            assert_eq!(r["partition"].as_i64(), Some(p), "{r}");
        }
    }
    for client in CLIENTS {
        let results = run(
            &python,
            client,
            &cluster.kafka(),
            json!([consume_job("native", sent.len())]),
        )
        .await;
        assert_eq!(results[0].as_array().unwrap(), &expected, "{client}");
    }
    cluster.agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_metadata_and_list_offsets() {
    let Some(python) = python() else { return };
    let cluster = cluster().await;
    let kafka = cluster.kafka();
    let node_id = node_id(&cluster).await;
    for client in CLIENTS {
        let topic = format!("offsets-{client}");
        // One partition: every record has a key of partition 0.
        let key = (0..100)
            .map(|i| format!("k{i}"))
            .find(|k| {
                streamhouse_client::partitioner::partition_for_key(k.as_bytes(), PARTITIONS) == 0
            })
            .unwrap();
        // Record 4 has the largest timestamp, out of order.
        let ts = |i: i64| 1_700_000_000_000i64 + if i == 4 { 100_000 } else { i * 1000 };
        let recs: Vec<Value> = (0..10)
            .map(|i| json!({"key": key, "value": format!("v{i}"), "headers": [], "timestamp": ts(i)}))
            .collect();
        let results = run(
            &python,
            client,
            &kafka,
            json!([
                {"op": "metadata", "topic": topic},
                produce_job(&topic, "none", "all", true, &recs),
                {"op": "offsets", "topic": topic, "partition": 0,
                 "timestamp": 1_700_000_004_500i64},
                {"op": "offsets", "topic": topic, "partition": 0,
                 "timestamp": 1_700_000_000_000i64},
                {"op": "offsets", "topic": topic, "partition": 0,
                 "timestamp": 1_800_000_000_000i64},
            ]),
        )
        .await;
        assert_eq!(
            results[0],
            json!({"brokers": [node_id], "partitions": PARTITIONS,
                   "leaders": [node_id, node_id, node_id]}),
            "{client}"
        );
        assert_eq!(
            results[2],
            json!({"earliest": 0, "latest": 10, "for_time": 4,
                   "max_timestamp": [4, ts(4)]}),
            "{client}"
        );
        assert_eq!(results[3]["for_time"], json!(0), "{client}");
        // Nothing that recent: librdkafka says -1, kafka-python None.
        assert!(
            results[4]["for_time"] == json!(-1) || results[4]["for_time"].is_null(),
            "{client}: {}",
            results[4]
        );
    }
    cluster.agent.shutdown().await.unwrap();
}

/// DeleteRecords from both admin clients: the log start moves to the
/// offset asked for (inside a batch), earliest offsets and a consumer from
/// the beginning start there, an offset past the high watermark is out of
/// range, and -1 deletes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_delete_records_moves_the_log_start() {
    let Some(python) = python() else { return };
    let cluster = cluster().await;
    let kafka = cluster.kafka();
    let key = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| streamhouse_client::partitioner::partition_for_key(k.as_bytes(), PARTITIONS) == 0)
        .unwrap();
    for client in CLIENTS {
        let topic = format!("delete-records-{client}");
        let recs: Vec<Value> = (0..30)
            .map(|i| {
                json!({"key": key, "value": format!("v{i}"), "headers": [],
                            "timestamp": 1_700_000_000_000i64 + i})
            })
            .collect();
        let results = run(
            &python,
            "confluent",
            &kafka,
            json!([produce_job(&topic, "none", "all", true, &recs)]),
        )
        .await;
        assert_eq!(results[0][29]["offset"], json!(29), "{client}");
        let results = run(
            &python,
            client,
            &kafka,
            json!([{"op": "delete_records", "topic": topic, "partition": 0, "offset": 12}]),
        )
        .await;
        assert_eq!(
            results[0],
            json!({"low_watermark": 12, "earliest": 12, "latest": 30, "first": 12,
                   "beyond": "OFFSET_OUT_OF_RANGE", "to_end": 30, "earliest_after": 30}),
            "{client}"
        );
    }
    cluster.agent.shutdown().await.unwrap();
}

/// The agent's node id (its only broker).
async fn node_id(cluster: &Cluster) -> i64 {
    let store = streamhouse_metadata::open(&format!(
        "sqlite://{}",
        cluster.dir.path().join("metadata.db").display()
    ))
    .await
    .unwrap();
    store.list_agents(None).await.unwrap()[0].node_id.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_admin_configs_and_committed_offsets() {
    let Some(python) = python() else { return };
    let cluster = cluster().await;
    let node = node_id(&cluster).await;
    let admin = Admin::connect(&cluster.grpc()).await.unwrap();
    for client in CLIENTS {
        let topic = format!("admin-{client}");
        let group = format!("group-{client}");
        let results = run(
            &python,
            client,
            &cluster.kafka(),
            json!([
                {"op": "admin", "topic": topic},
                {"op": "commit", "topic": topic, "group": group,
                 "offsets": [[0, 5, "m0"], [3, 7, null]]},
            ]),
        )
        .await;
        let r = &results[0];
        assert_eq!(r["created"], Value::Null, "{client}: {r}");
        assert_eq!(r["created_again"], "TOPIC_ALREADY_EXISTS", "{client}");
        assert_eq!(r["bad_config"], "INVALID_CONFIG", "{client}");
        assert_eq!(r["grown"], Value::Null, "{client}: {r}");
        assert_eq!(r["shrunk"], "INVALID_PARTITIONS", "{client}");
        assert_eq!(r["partitions"], 4, "{client}");
        assert_eq!(
            r["cluster"],
            json!({"cluster_id": "streamhouse", "controller": node, "brokers": [node]}),
            "{client}"
        );
        let configs = |name: &str| r[name].as_object().unwrap().clone();
        if client == "confluent" {
            // librdkafka lists every config, defaults and read-only ones too.
            let c = configs("configs");
            assert_eq!(c["retention.ms"], "3600000");
            assert_eq!(c["cleanup.policy"], "compact");
            assert_eq!(c["retention.bytes"], "-1");
            assert_eq!(c["max.message.bytes"], (8u64 << 20).to_string());
            // Incremental: retention.bytes set, cleanup.policy deleted.
            let c = configs("altered_configs");
            assert_eq!(
                (
                    &c["retention.ms"],
                    &c["retention.bytes"],
                    &c["cleanup.policy"]
                ),
                (&json!("3600000"), &json!("1048576"), &json!("delete"))
            );
            // AlterConfigs with retention.bytes only: the rest is default.
            let c = configs("reset_configs");
            assert_eq!(
                (
                    &c["retention.ms"],
                    &c["retention.bytes"],
                    &c["cleanup.policy"]
                ),
                (&json!("-1"), &json!("1048576"), &json!("delete"))
            );
        } else {
            // kafka-python lists the configs set on the topic.
            assert_eq!(
                r["configs"],
                json!({"retention.ms": "3600000", "cleanup.policy": "compact"})
            );
            assert_eq!(
                r["altered_configs"],
                json!({"retention.ms": "3600000", "retention.bytes": "1048576",
                       "cleanup.policy": "compact"})
            );
            assert_eq!(r["reset_configs"], json!({}));
        }
        // The same topic over gRPC.
        let described = admin.describe_topic(&topic).await.unwrap();
        assert_eq!(described.partitions.len(), 4, "{client}");
        assert_eq!(
            described.config.get("retention.bytes").map(String::as_str),
            Some("1048576"),
            "{client}"
        );
        // Standalone commits, read back by the client, its admin client and
        // gRPC.
        let expected = json!([[0, 5, "m0"], [3, 7, null]]);
        assert_eq!(results[1]["committed"], expected, "{client}");
        assert_eq!(results[1]["listed"], expected, "{client}");
        let offsets = admin.describe_group(&group).await.unwrap().offsets;
        let offsets: Vec<(u32, i64)> = offsets.iter().map(|(tp, o)| (tp.partition, *o)).collect();
        assert_eq!(offsets, [(0, 5), (3, 7)], "{client}");

        let results = run(
            &python,
            client,
            &cluster.kafka(),
            json!([{"op": "delete", "topic": topic}]),
        )
        .await;
        assert_eq!(results[0]["deleted"], Value::Null, "{client}");
        assert!(
            results[0]["deleted_again"]
                .as_str()
                .unwrap()
                .starts_with("UNKNOWN_TOPIC_OR_PART"),
            "{client}: {}",
            results[0]
        );
        assert!(admin.describe_topic(&topic).await.is_err(), "{client}");
    }
    cluster.agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_agents_lead_partitions_and_clients_survive_one_leaving() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (metadata, store) = shared_stores(dir.path()).await;
    let start = |id: &str| {
        let mut config = AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            agent_id: Some(id.to_string()),
            kafka_listen: Some("127.0.0.1:0".parse().unwrap()),
            heartbeat_interval: Duration::from_millis(100),
            agent_ttl: Duration::from_secs(1),
            ..AgentConfig::default()
        };
        config.pipeline.linger = Duration::from_millis(2);
        Agent::start_with(config, metadata.clone(), store.clone())
    };
    let a = start("agent-a").await.unwrap();
    let b = start("agent-b").await.unwrap();
    let nodes: HashMap<String, i64> = metadata
        .list_agents(None)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.agent_id, a.node_id.into()))
        .collect();
    Admin::connect(&a.local_addr().to_string())
        .await
        .unwrap()
        .create_topic("ha", 6, None, HashMap::new())
        .await
        .unwrap();
    let bootstrap = a.kafka_addr().unwrap().to_string();
    // Both agents are brokers, and each leads half the partitions.
    for client in CLIENTS {
        let r = run(
            &python,
            client,
            &bootstrap,
            json!([{"op": "metadata", "topic": "ha"}]),
        )
        .await;
        let mut brokers = vec![nodes["agent-a"], nodes["agent-b"]];
        brokers.sort();
        assert_eq!(r[0]["brokers"], json!(brokers), "{client}");
        let leaders: Vec<i64> = r[0]["leaders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_i64().unwrap())
            .collect();
        for node in &brokers {
            assert_eq!(
                leaders.iter().filter(|l| *l == node).count(),
                3,
                "{client}: {leaders:?}"
            );
        }
    }
    // An idempotent librdkafka producer streams while agent b shuts down:
    // every record is delivered, and stored exactly once.
    let count = 1500;
    let producing = tokio::spawn({
        let python = python.clone();
        let bootstrap = bootstrap.clone();
        async move {
            run(
                &python,
                "confluent",
                &bootstrap,
                json!([{"op": "produce_stream", "topic": "ha", "count": count, "seconds": 3}]),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    b.shutdown().await.unwrap();
    let produced = producing.await.unwrap();
    assert_eq!(
        produced[0],
        json!({"delivered": count, "errors": []}),
        "every record is delivered"
    );
    let consumed = run(
        &python,
        "confluent",
        &bootstrap,
        json!([{"op": "consume", "topic": "ha", "partitions": (0..6).collect::<Vec<_>>(),
                "count": count}]),
    )
    .await;
    let mut values: Vec<String> = consumed[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    values.sort();
    let mut expected: Vec<String> = (0..count).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(values, expected, "every record once");
    // After b left, a leads everything.
    let r = run(
        &python,
        "confluent",
        &bootstrap,
        json!([{"op": "metadata", "topic": "ha"}]),
    )
    .await;
    assert_eq!(r[0]["brokers"], json!([nodes["agent-a"]]));
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_librdkafka_producer_through_a_sigkilled_agent() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = AgentProcess::start(dir.path(), "agent-a");
    let b = AgentProcess::start(dir.path(), "agent-b");
    Admin::connect(&a.grpc)
        .await
        .unwrap()
        .create_topic("killed", 6, None, HashMap::new())
        .await
        .unwrap();
    let count = 3000;
    let producing = tokio::spawn({
        let python = python.clone();
        let bootstrap = a.kafka.clone();
        async move {
            run(
                &python,
                "confluent",
                &bootstrap,
                json!([{"op": "produce_stream", "topic": "killed", "count": count, "seconds": 6}]),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Restarted with the same agent id: the same node id, a new address.
    let b = AgentProcess::start(dir.path(), "agent-b");
    let produced = producing.await.unwrap();
    assert_eq!(
        produced[0],
        json!({"delivered": count, "errors": []}),
        "every record is delivered"
    );
    let consumed = run(
        &python,
        "confluent",
        &b.kafka,
        json!([{"op": "consume", "topic": "killed", "partitions": (0..6).collect::<Vec<_>>(),
                "count": count}]),
    )
    .await;
    let mut values: Vec<String> = consumed[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    values.sort();
    let mut expected: Vec<String> = (0..count).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(values, expected, "every record once");
    // And nothing more is stored.
    let described = Admin::connect(&b.grpc)
        .await
        .unwrap()
        .describe_topic("killed")
        .await
        .unwrap();
    let stored: i64 = described.partitions.iter().map(|p| p.high_watermark).sum();
    assert_eq!(stored, count, "records stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kcat_lists_produces_and_consumes() {
    let Some(kcat) = kcat() else { return };
    let cluster = cluster().await;
    let b = cluster.kafka();
    let node = node_id(&cluster).await;
    // -P: keyed records with a header; the topic is created on first use.
    run_kcat(
        kcat,
        &["-b", &b, "-P", "-t", "kc", "-K", ":", "-H", "origin=kcat"],
        "user1:first\nuser2:second\nuser1:third\n",
    )
    .await;
    // -L: the agent as the one broker, the topic with its partitions.
    let listed = run_kcat(kcat, &["-b", &b, "-L", "-t", "kc"], "").await;
    assert!(
        listed.contains(&format!("broker {node} at {b}")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("topic \"kc\" with {PARTITIONS} partitions")),
        "{listed}"
    );
    // -C -e: everything back (kcat hashes keys with librdkafka's default
    // partitioner, so only the records are compared).
    let consumed = run_kcat(
        kcat,
        &["-b", &b, "-C", "-t", "kc", "-e", "-f", "%k=%s %h\n"],
        "",
    )
    .await;
    let mut lines: Vec<&str> = consumed.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "user1=first origin=kcat",
            "user1=third origin=kcat",
            "user2=second origin=kcat"
        ]
    );
    // The same records over gRPC.
    let native = native_consume(&cluster, "kc", 3).await;
    assert_eq!(native.len(), 3);
    cluster.agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_of_a_zone_use_its_agents() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (metadata, store) = shared_stores(dir.path()).await;
    let start = |id: &str, zone: &str| {
        let mut config = AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            agent_id: Some(id.to_string()),
            zone: Some(zone.to_string()),
            kafka_listen: Some("127.0.0.1:0".parse().unwrap()),
            kafka_default_partitions: PARTITIONS,
            ..AgentConfig::default()
        };
        config.pipeline.linger = Duration::from_millis(2);
        Agent::start_with(config, metadata.clone(), store.clone())
    };
    let a = start("agent-a", "az1").await.unwrap();
    let b = start("agent-b", "az2").await.unwrap();
    let node_b: i64 = metadata
        .list_agents(None)
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.agent_id == "agent-b")
        .unwrap()
        .node_id
        .into();
    let bootstrap = a.kafka_addr().unwrap().to_string();
    // Metadata for a client naming zone az2 in its client id: every leader
    // in az2.
    for client in CLIENTS {
        let r = run(
            &python,
            client,
            &bootstrap,
            json!([{"op": "metadata", "topic": "zoned", "client_id": "tests,zone=az2"}]),
        )
        .await;
        assert_eq!(
            r[0]["leaders"],
            json!(vec![node_b; PARTITIONS as usize]),
            "{client}"
        );
    }
    // librdkafka with client.rack=az2, bootstrapped at the az1 agent,
    // follows the preferred read replica and reads everything.
    let recs = records("zoned", 30);
    let r = run(
        &python,
        "confluent",
        &bootstrap,
        json!([
            produce_job("zoned", "lz4", "all", true, &recs),
            {"op": "consume", "topic": "zoned", "partitions": (0..PARTITIONS).collect::<Vec<_>>(),
             "count": recs.len(), "rack": "az2"},
        ]),
    )
    .await;
    assert_eq!(r[1].as_array().unwrap(), &placed(&recs, &r[0]));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// `node` with kafkajs installed in `fixtures/kafka/kafkajs` (by
/// `scripts/test`), or `None` to skip (never under CI).
fn kafkajs() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/kafka/kafkajs");
    let installed = dir.join("node_modules/kafkajs/package.json").exists()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if installed {
        return Some(dir);
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "node or kafkajs is missing and CI=true: run scripts/test"
    );
    eprintln!("skipping: node or kafkajs is missing (scripts/test installs kafkajs)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafkajs_produces_and_administers() {
    let Some(python) = python() else { return };
    let Some(dir) = kafkajs() else { return };
    let cluster = cluster().await;
    let node = node_id(&cluster).await;
    let recs = records("kafkajs", 20);
    let jobs = json!([
        {"op": "metadata", "topic": "js"},
        produce_job("js", "gzip", "all", true, &recs),
        {"op": "admin", "topic": "js-admin"},
        // kafkajs's plain producer writes producer id -1 with epoch 0 and
        // sequence 0: no idempotence, as Kafka reads it.
        produce_job("js-plain", "none", "1", false, &recs),
        // A kafkajs consumer group member (classic protocol) reads it all.
        {"op": "consume", "topic": "js", "group": "js-group", "count": recs.len()},
    ]);
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("clients.mjs"))
        .arg(cluster.kafka())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(jobs.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("kafkajs did not finish")
        .unwrap();
    assert!(
        out.status.success(),
        "kafkajs failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        results[0],
        json!({"brokers": [node], "partitions": PARTITIONS, "leaders": [node, node, node]})
    );
    // kafkajs's default partitioner is Java's: keyed records land where
    // the native partitioner puts them.
    let expected = placed(&recs, &results[1]);
    for r in &expected {
        if let Some(p) = expected_partition(&r["key"]) {
            assert_eq!(r["partition"].as_i64(), Some(p), "{r}");
        }
    }
    assert_eq!(
        results[2],
        json!({"created": null, "created_again": null,
               "configs": {"retention.ms": "3600000"},
               "offsets": [{"partition": 0, "low": 0, "high": 0},
                           {"partition": 1, "low": 0, "high": 0}],
               "deleted": null})
    );
    // What kafkajs wrote, read back by librdkafka exactly.
    let consumed = run(
        &python,
        "confluent",
        &cluster.kafka(),
        json!([consume_job("js", recs.len())]),
    )
    .await;
    assert_eq!(consumed[0].as_array().unwrap(), &expected);
    let plain = placed(&recs, &results[3]);
    let consumed = run(
        &python,
        "confluent",
        &cluster.kafka(),
        json!([consume_job("js-plain", recs.len())]),
    )
    .await;
    assert_eq!(consumed[0].as_array().unwrap(), &plain);
    let by_group: Vec<Value> = expected
        .iter()
        .map(|r| {
            json!({"partition": r["partition"], "offset": r["offset"],
                        "key": r["key"], "value": r["value"]})
        })
        .collect();
    assert_eq!(
        results[4].as_array().unwrap(),
        &by_group,
        "kafkajs group member"
    );
    // It committed what it read.
    let committed: i64 = Admin::connect(cluster.grpc())
        .await
        .unwrap()
        .describe_group("js-group")
        .await
        .unwrap()
        .offsets
        .iter()
        .map(|(_, o)| o)
        .sum();
    assert_eq!(committed, recs.len() as i64);
    cluster.agent.shutdown().await.unwrap();
}
