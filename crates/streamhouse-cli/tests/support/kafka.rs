//! What the real-client tests share: the Python interpreter with the
//! Kafka clients, and `streamhouse agent` processes.
#![allow(dead_code)]

use std::process::Stdio;

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
            .args(["--flush-interval-ms", "5", "--unsafe-no-fsync"])
            .arg("--metadata")
            .arg(format!("sqlite://{}", dir.join("metadata.db").display()))
            .arg("--storage")
            .arg(format!("file://{}", dir.join("objects").display()))
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
            .unwrap_or_else(|| panic!("no Kafka address in {line:?}"))
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
