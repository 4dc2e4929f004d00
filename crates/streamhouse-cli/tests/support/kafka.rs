//! What the real-client tests share: the Python interpreter with the
//! Kafka clients, and `streamhouse agent` processes.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use streamhouse_agent::{Agent, AgentConfig, RunningAgent};
use tokio::io::AsyncWriteExt;

/// The interpreter with both clients, or `None` to skip (never under CI).
pub fn python() -> Option<String> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let Ok(python) = std::env::var("STREAMHOUSE_KAFKA_PYTHON") else {
        assert!(
            !ci,
            "STREAMHOUSE_KAFKA_PYTHON is not set and CI=true: run scripts/test"
        );
        eprintln!("skipping: STREAMHOUSE_KAFKA_PYTHON is not set (scripts/test sets it)");
        return None;
    };
    let imports = std::process::Command::new(&python)
        .args(["-c", "import kafka, confluent_kafka"])
        .status()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    if !imports.success() {
        assert!(
            !ci,
            "{python} lacks kafka-python or confluent-kafka and CI=true"
        );
        eprintln!("skipping: {python} lacks kafka-python or confluent-kafka");
        return None;
    }
    Some(python)
}

/// `streamhouse agent` as a process; killed when dropped.
pub struct AgentProcess {
    pub child: std::process::Child,
    pub grpc: String,
    pub kafka: String,
}

impl AgentProcess {
    pub fn start(dir: &std::path::Path, agent_id: &str) -> AgentProcess {
        AgentProcess::start_with_args(dir, agent_id, Vec::<String>::new())
    }

    /// Like [`AgentProcess::start`], with more arguments for the agent
    /// (TLS, authentication, metrics).
    pub fn start_with_args(
        dir: &std::path::Path,
        agent_id: &str,
        extra: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
    ) -> AgentProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_streamhouse"))
            .args([
                "agent",
                "--listen",
                "127.0.0.1:0",
                "--kafka-listen",
                "127.0.0.1:0",
            ])
            .args(["--agent-id", agent_id, "--heartbeat-ms", "200"])
            .args(["--linger-ms", "5", "--unsafe-no-fsync"])
            .arg("--metadata")
            .arg(format!("sqlite://{}", dir.join("metadata.db").display()))
            .arg("--storage")
            .arg(format!("file://{}", dir.join("objects").display()))
            .args(extra)
            .env("STREAMHOUSE_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "streamhouse agent ID, Kafka on ADDR, listening on ADDR"
        let kafka = line
            .split("Kafka on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("no Kafka address in {line:?} (did the agent start?)"))
            .to_string();
        let grpc = line.trim().rsplit(' ').next().unwrap().to_string();
        AgentProcess { child, grpc, kafka }
    }

    pub fn kill(mut self) {
        // SIGKILL: no flush, no deregistration.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A metadata store (SQLite, no fsync) and an object store (a directory)
/// in `dir`, for several in-process agents to share.
pub async fn shared_stores(
    dir: &std::path::Path,
) -> (
    Arc<dyn streamhouse_metadata::MetadataStore>,
    Arc<dyn object_store::ObjectStore>,
) {
    let metadata = streamhouse_metadata::open_without_fsync(&format!(
        "sqlite://{}",
        dir.join("metadata.db").display()
    ))
    .await
    .unwrap();
    let store = streamhouse_storage::open_object_store(
        &format!("file://{}", dir.join("objects").display()),
        &Default::default(),
    )
    .unwrap();
    (metadata, store)
}

/// An agent in process on SQLite and a local directory (no fsync), with
/// its Kafka listener on a free port.
pub struct Cluster {
    pub agent: RunningAgent,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// With `partitions` partitions for auto-created topics.
    pub async fn start_with(partitions: u32, configure: impl FnOnce(&mut AgentConfig)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            metadata_url: format!("sqlite://{}", dir.path().join("metadata.db").display()),
            storage_url: format!("file://{}", dir.path().join("objects").display()),
            kafka_listen: Some("127.0.0.1:0".parse().unwrap()),
            kafka_default_partitions: partitions,
            unsafe_no_fsync: true,
            ..AgentConfig::default()
        };
        config.pipeline.linger = Duration::from_millis(2);
        configure(&mut config);
        let agent = Agent::start(config).await.unwrap();
        Cluster { agent, dir }
    }

    pub fn grpc(&self) -> String {
        self.agent.local_addr().to_string()
    }

    pub fn kafka(&self) -> String {
        self.agent.kafka_addr().unwrap().to_string()
    }
}

/// `kcat` (librdkafka 2.0), or `None` to skip (never under CI).
pub fn kcat() -> Option<&'static str> {
    if std::process::Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("kcat");
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "kcat is not installed and CI=true: run scripts/test"
    );
    eprintln!("skipping: kcat is not installed (scripts/test installs it)");
    None
}

/// Runs kcat with `args` and `input`; its standard output.
pub async fn run_kcat(kcat: &str, args: &[&str], input: &str) -> String {
    let mut child = tokio::process::Command::new(kcat)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kcat did not finish")
        .unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
