//! Agents as real `streamhouse agent` processes, each behind its own
//! proxy: the agent advertises the proxy's address, so every client
//! request (discovered agents included) crosses the proxy.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use crate::profile::Figures;
use crate::proxy::Proxy;

const BIN: &str = env!("CARGO_BIN_EXE_streamhouse");

/// Where agents keep their state: the `--metadata`, `--storage` and S3
/// arguments every agent of a cluster shares.
#[derive(Clone, Debug)]
pub struct Stores {
    pub args: Vec<String>,
}

/// One agent process and the proxy in front of it.
pub struct Agent {
    pub proxy: Proxy,
    /// The agent's own address (not the proxy's).
    pub direct: SocketAddr,
    child: Child,
    stores: Stores,
    stopped: bool,
}

impl Agent {
    pub async fn start(
        name: &'static str,
        seed: u64,
        stores: &Stores,
        figures: Arc<Figures>,
    ) -> Agent {
        let proxy = Proxy::start(name, seed, figures).await;
        let (child, direct) = spawn(stores, proxy.address);
        proxy.set_upstream(direct);
        Agent {
            proxy,
            direct,
            child,
            stores: stores.clone(),
            stopped: false,
        }
    }

    /// The address clients use: the proxy's.
    pub fn address(&self) -> String {
        self.proxy.address.to_string()
    }

    /// SIGKILL, then a new process on the same stores behind the same
    /// proxy.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        let (child, direct) = spawn(&self.stores, self.proxy.address);
        self.child = child;
        self.direct = direct;
        self.proxy.set_upstream(direct);
    }

    pub fn kill(&mut self) {
        self.cont();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process stays, its connections stay open, nothing
    /// answers.
    pub fn stop(&mut self) {
        signal(&self.child, "-STOP");
        self.stopped = true;
    }

    pub fn cont(&mut self) {
        if self.stopped {
            signal(&self.child, "-CONT");
            self.stopped = false;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {signal} failed");
}

/// Starts `streamhouse agent` on a free port advertising `advertise`.
fn spawn(stores: &Stores, advertise: SocketAddr) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--kafka-listen",
            "127.0.0.1:0",
            "--advertise",
            &advertise.to_string(),
            "--linger-ms",
            "5",
            "--heartbeat-ms",
            "200",
            "--group-heartbeat-ms",
            "100",
            "--transaction-check-ms",
            "200",
            "--unsafe-no-fsync",
            // Background jobs at their most eager, so merges and object
            // collection race the faults too.
            "--compaction-interval-s",
            "1",
            "--compaction-target-bytes",
            "262144",
            "--gc-interval-s",
            "1",
            "--gc-grace-s",
            "1",
        ])
        .args(&stores.args)
        .env("STREAMHOUSE_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting streamhouse agent");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains("listening on"),
        "unexpected agent output {line:?}"
    );
    let address = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("agent prints its address: {line:?}"));
    (child, address)
}
