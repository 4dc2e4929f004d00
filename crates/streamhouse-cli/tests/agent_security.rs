//! `streamhouse agent` processes and their security settings:
//!
//! - certificate reload: the certificate files are replaced (same CA,
//!   another serial) and SIGHUP makes new connections get the new
//!   certificate while the agent keeps serving; a broken replacement keeps
//!   the certificate in use.
//! - the safe default: an agent listening beyond loopback refuses to start
//!   without --require-auth unless --allow-unauthenticated.
//! - the metrics endpoint with TLS on answers over HTTPS, and not over
//!   plain HTTP.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use streamhouse_client::{Admin, Security};

mod support;
use support::kafka::AgentProcess;
use support::security::{http_get, peer_certificate, pem_certificate, tls_connect, tls_fixture};

/// Writes `contents` to `path` by renaming a new file over it, keeping
/// the old modification time: the agent's file watcher then sees no
/// change (same size, same time), so only SIGHUP can make it reload.
fn replace_keeping_mtime(path: &Path, contents: &[u8]) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let new = path.with_extension("new");
    std::fs::write(&new, contents).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&new)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::rename(&new, path).unwrap();
}

fn hangup(agent: &AgentProcess) {
    let status = Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_broken_one_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::copy(tls_fixture("server.pem"), &cert).unwrap();
    std::fs::copy(tls_fixture("server-key.pem"), &key).unwrap();
    let ca = tls_fixture("ca.pem");
    let mut agent = AgentProcess::start_with_args(
        dir.path(),
        "reload",
        [
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
    );
    let first = pem_certificate(&tls_fixture("server.pem"));
    let second = pem_certificate(&tls_fixture("server2.pem"));
    assert_ne!(first, second);
    assert_eq!(peer_certificate(&agent.kafka, &ca).await, first);
    assert_eq!(peer_certificate(&agent.grpc, &ca).await, first);

    let security = Security::new().tls_ca_file(&ca).unwrap();
    let admin = Admin::connect_with(&agent.grpc, security.clone())
        .await
        .unwrap();
    admin
        .create_topic("before", 1, None, Default::default())
        .await
        .unwrap();

    // The watcher cannot see this replacement: only SIGHUP reloads it.
    replace_keeping_mtime(
        &key,
        &std::fs::read(tls_fixture("server2-key.pem")).unwrap(),
    );
    replace_keeping_mtime(&cert, &std::fs::read(tls_fixture("server2.pem")).unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        peer_certificate(&agent.kafka, &ca).await,
        first,
        "reloaded without SIGHUP (the test's premise is wrong)"
    );
    hangup(&agent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_certificate(&agent.kafka, &ca).await != second {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peer_certificate(&agent.grpc, &ca).await, second);
    // The agent keeps serving: on the connection opened before the reload,
    // and on new ones.
    let names = |topics: Vec<streamhouse_client::TopicDescription>| {
        topics.into_iter().map(|t| t.name).collect::<Vec<_>>()
    };
    assert_eq!(names(admin.list_topics().await.unwrap()), ["before"]);
    let fresh = Admin::connect_with(&agent.grpc, security.clone())
        .await
        .unwrap();
    assert_eq!(names(fresh.list_topics().await.unwrap()), ["before"]);

    // A broken certificate file (SIGHUP, and the watcher sees it change):
    // the one in use stays.
    std::fs::write(&cert, b"-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    hangup(&agent);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited"
    );
    assert_eq!(peer_certificate(&agent.kafka, &ca).await, second);
    let fresh = Admin::connect_with(&agent.grpc, security).await.unwrap();
    assert_eq!(names(fresh.list_topics().await.unwrap()), ["before"]);
}

/// `streamhouse agent` with `args` on stores in `dir`; waits for it to
/// exit (or start, then kills it) and returns whether it started, and its
/// standard error.
fn agent_outcome(dir: &Path, args: &[&str]) -> (bool, Option<i32>, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamhouse"))
        .arg("agent")
        .args(args)
        .args(["--unsafe-no-fsync", "--metadata"])
        .arg(format!("sqlite://{}", dir.join("metadata.db").display()))
        .arg("--storage")
        .arg(format!("file://{}", dir.join("objects").display()))
        .env("STREAMHOUSE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let started = line.starts_with("streamhouse agent ");
    if started {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        started,
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn an_agent_beyond_loopback_needs_authentication_or_an_explicit_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let open = [
        "--listen",
        "0.0.0.0:0",
        "--kafka-listen",
        "0.0.0.0:0",
        "--agent-id",
        "exposed",
    ];
    let (started, code, stderr) = agent_outcome(dir.path(), &open);
    assert!(!started, "an exposed agent without authentication started");
    assert!(code.is_some_and(|c| c != 0), "exit code {code:?}: {stderr}");
    assert!(
        stderr.contains("--require-auth") && stderr.contains("--allow-unauthenticated"),
        "the refusal does not name the flags: {stderr}"
    );

    // Only the Kafka listener beyond loopback is refused too.
    let kafka_only = ["--listen", "127.0.0.1:0", "--kafka-listen", "0.0.0.0:0"];
    let (started, _, stderr) = agent_outcome(dir.path(), &kafka_only);
    assert!(!started, "an exposed Kafka listener started: {stderr}");

    let with = |flag: &'static str| open.iter().copied().chain([flag]).collect::<Vec<_>>();
    let (started, _, stderr) = agent_outcome(dir.path(), &with("--allow-unauthenticated"));
    assert!(started, "--allow-unauthenticated did not start: {stderr}");
    let (started, _, stderr) = agent_outcome(dir.path(), &with("--require-auth"));
    assert!(started, "--require-auth did not start: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_over_https_only_when_tls_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let ca = tls_fixture("ca.pem");
    let agent = AgentProcess::start_with_args(
        dir.path(),
        "metrics",
        [
            "--tls-cert".as_ref(),
            tls_fixture("server.pem").as_os_str(),
            "--tls-key".as_ref(),
            tls_fixture("server-key.pem").as_os_str(),
            "--metrics-listen".as_ref(),
            std::ffi::OsStr::new(&metrics),
        ],
    );
    // Some traffic, so that request metrics exist.
    let admin = Admin::connect_with(&agent.grpc, Security::new().tls_ca_file(&ca).unwrap())
        .await
        .unwrap();
    admin.list_topics().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = match tls_connect(&metrics, &ca).await {
            Ok(tls) => http_get(tls, "/metrics").await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Ok((status, body)) = &answer {
            assert_eq!(*status, 200, "{body}");
            if body.lines().any(|l| l.starts_with("streamhouse_")) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no streamhouse_ metrics over HTTPS: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = tokio::net::TcpStream::connect(&metrics).await.unwrap();
    let answer = http_get(plain, "/metrics").await;
    assert!(
        answer.is_err(),
        "plain HTTP was answered over the TLS port: {answer:?}"
    );
}
