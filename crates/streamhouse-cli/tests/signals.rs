//! `streamhouse consume --group` and `streamhouse copy` stop cleanly on
//! SIGTERM or SIGINT: they commit what they handled, leave the group at
//! once and exit 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use streamhouse_agent::{Agent, AgentConfig, RunningAgent};
use streamhouse_client::{Admin, Producer, ProducerRecord, TopicPartition};

const BIN: &str = env!("CARGO_BIN_EXE_streamhouse");

async fn agent(dir: &tempfile::TempDir) -> RunningAgent {
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metadata_url: format!("sqlite://{}", dir.path().join("metadata.db").display()),
        storage_url: format!("file://{}", dir.path().join("objects").display()),
        ..AgentConfig::default()
    };
    config.pipeline.linger = Duration::from_millis(2);
    Agent::start(config).await.unwrap()
}

async fn fill(address: &str, topic: &str, n: usize) {
    let admin = Admin::connect(address).await.unwrap();
    admin
        .create_topic(topic, 1, None, Default::default())
        .await
        .unwrap();
    let p = Producer::builder()
        .bootstrap(address)
        .build()
        .await
        .unwrap();
    for i in 0..n {
        drop(
            p.send_record(ProducerRecord::new(topic, format!("v{i}")))
                .await
                .unwrap(),
        );
    }
    p.close().await.unwrap();
}

fn kill(pid: u32, signal: &str) {
    assert!(
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

async fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    panic!("did not exit within 5 s of the signal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_a_group_commits_and_leaves_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let address = agent.local_addr().to_string();
    fill(&address, "s", 10).await;
    let admin = Admin::connect(&address).await.unwrap();
    for signal in ["-TERM", "-INT"] {
        let group = format!("g{signal}");
        let mut child = Command::new(BIN)
            .args(["consume", "s", "--group", &group, "--from-beginning"])
            .args(["--follow", "-a", &address])
            .env("STREAMHOUSE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for i in 0..10 {
            assert_eq!(lines.next().unwrap().unwrap(), format!("v{i}"));
        }
        // It is a live member now, and stays one while it follows.
        let described = admin.describe_group(&group).await.unwrap();
        assert_eq!(described.members.len(), 1);
        kill(child.id(), signal);
        let status = wait_exit(&mut child).await;
        assert!(status.success(), "{signal}: {status:?}");
        let described = admin.describe_group(&group).await.unwrap();
        assert!(described.members.is_empty(), "{signal}: left at once");
        assert_eq!(
            described.offsets,
            [(TopicPartition::new("s", 0), 10)],
            "{signal}: committed what it printed"
        );
    }
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_finishes_its_transaction_and_leaves_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let address = agent.local_addr().to_string();
    fill(&address, "src", 20).await;
    let admin = Admin::connect(&address).await.unwrap();
    admin
        .create_topic("dst", 1, None, Default::default())
        .await
        .unwrap();
    let mut child = Command::new(BIN)
        .args([
            "copy",
            "src",
            "dst",
            "--group",
            "copier",
            "--transactional-id",
            "c1",
        ])
        .args(["-a", &address])
        .env("STREAMHOUSE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let g = admin.describe_group("copier").await;
        if g.is_ok_and(|g| g.offsets == [(TopicPartition::new("src", 0), 20)]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "copy made no progress"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill(child.id(), "-TERM");
    let status = wait_exit(&mut child).await;
    assert!(status.success(), "{status:?}");
    assert!(
        admin
            .describe_group("copier")
            .await
            .unwrap()
            .members
            .is_empty()
    );
    agent.shutdown().await.unwrap();
}
