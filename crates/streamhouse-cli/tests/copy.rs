//! `streamhouse copy` reads on past an aborted transaction larger than a
//! fetch: only the committed records are copied (before, it never got past
//! the aborted records and went idle with nothing copied).

use std::process::Command;
use std::time::{Duration, Instant};

use streamhouse_agent::{Agent, AgentConfig};
use streamhouse_client::{
    Admin, AutoOffsetReset, Consumer, IsolationLevel, Producer, ProducerRecord, TopicPartition,
};

const BIN: &str = env!("CARGO_BIN_EXE_streamhouse");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_passes_an_aborted_transaction_larger_than_a_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metadata_url: format!("sqlite://{}", dir.path().join("metadata.db").display()),
        storage_url: format!("file://{}", dir.path().join("objects").display()),
        ..AgentConfig::default()
    };
    config.pipeline.linger = Duration::from_millis(2);
    let agent = Agent::start(config).await.unwrap();
    let address = agent.local_addr().to_string();
    let admin = Admin::connect(&address).await.unwrap();
    for t in ["src", "dst"] {
        admin
            .create_topic(t, 1, None, Default::default())
            .await
            .unwrap();
    }
    let p = Producer::builder()
        .bootstrap(&address)
        .transactional_id("writer")
        .build()
        .await
        .unwrap();
    p.init_transactions().await.unwrap();
    p.begin_transaction().unwrap();
    // About 3 MiB, over the consumer's 1 MiB per-partition fetch.
    for _ in 0..300 {
        drop(
            p.send_record(ProducerRecord::new("src", vec![b'x'; 10_000]))
                .await
                .unwrap(),
        );
    }
    p.abort_transaction().await.unwrap();
    p.begin_transaction().unwrap();
    for i in 0..5 {
        drop(
            p.send_record(ProducerRecord::new("src", format!("kept{i}")))
                .await
                .unwrap(),
        );
    }
    p.commit_transaction().await.unwrap();

    let out = Command::new(BIN)
        .args([
            "copy",
            "src",
            "dst",
            "--group",
            "copier",
            "--transactional-id",
            "c",
        ])
        .args(["--idle-exit-ms", "1500", "-a", &address])
        .env("STREAMHOUSE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("copied 5 records"), "{stderr}");

    let c = Consumer::builder()
        .bootstrap(&address)
        .assign([TopicPartition::new("dst", 0)])
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .isolation_level(IsolationLevel::ReadCommitted)
        .fetch_max_wait(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 5 && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(50)).await.unwrap() {
            got.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(got, ["kept0", "kept1", "kept2", "kept3", "kept4"]);
    c.close().await.unwrap();
    agent.shutdown().await.unwrap();
}
