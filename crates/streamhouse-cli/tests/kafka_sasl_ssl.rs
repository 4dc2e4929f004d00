//! Kafka over SASL_SSL with a real client: confluent-kafka
//! (`fixtures/kafka/sasl_ssl.py`, with the interpreter in
//! `STREAMHOUSE_KAFKA_PYTHON`; under `CI=true` a missing interpreter or
//! client fails) against a `streamhouse agent` process with TLS and
//! `--require-auth`, whose user is made by `streamhouse users create` and
//! given ACLs by `streamhouse acl add`.
//!
//! SCRAM-SHA-512 over TLS produces and consumes; a wrong password and an
//! unknown user are refused as authentication failures with the same
//! message; plain-text clients (PLAINTEXT, SASL_PLAINTEXT) to the TLS port
//! get a transport error. None of them hangs.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::kafka::{AgentProcess, python};
use support::security::tls_fixture;

const TOPIC: &str = "secure-orders";
const PASSWORD: &str = "correct horse battery staple";

/// Runs `streamhouse` with `args` (and `env`) and `stdin`; panics unless it
/// succeeds.
fn streamhouse(args: &[&str], env: &[(&str, &str)], stdin: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamhouse"))
        .args(args)
        .envs(env.iter().copied())
        .env("STREAMHOUSE_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "streamhouse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the fixture script with `args`; its one JSON line. Panics if it
/// takes much longer than its own timeouts (a hang).
fn client(python: &str, args: Value) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/kafka/sasl_ssl.py"
    );
    let mut child = Command::new(python)
        .args([script, &args.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the client hung: {args}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args}: {}", out.status);
    let line = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("bad output {line:?}: {e}"))
}

fn errors(answer: &Value) -> Vec<(String, String)> {
    answer["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    (
                        e["code"].as_str().unwrap_or("").to_string(),
                        e["str"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn metadata_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("metadata.db").display())
}

#[test]
fn sasl_ssl_scram_sha_512_with_confluent_kafka() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let metadata = metadata_url(dir.path());
    let ca = tls_fixture("ca.pem");
    let ca = ca.to_str().unwrap();

    // The user and its ACLs, before the agent runs (as an operator would
    // make the first user of a cluster). The password comes on stdin.
    streamhouse(
        &[
            "users",
            "create",
            "alice",
            "--mechanism",
            "SCRAM-SHA-512",
            "--metadata",
            &metadata,
        ],
        &[],
        &format!("{PASSWORD}\n"),
    );
    for resource in [["--topic", TOPIC], ["--group", "sasl-ssl-test"]] {
        streamhouse(
            &[
                &[
                    "acl",
                    "add",
                    "--principal",
                    "User:alice",
                    "--operation",
                    "all",
                ][..],
                &resource[..],
                &["--metadata", &metadata][..],
            ]
            .concat(),
            &[],
            "",
        );
    }

    let agent = AgentProcess::start_with_args(
        dir.path(),
        "sasl-ssl",
        [
            "--require-auth".as_ref(),
            "--tls-cert".as_ref(),
            tls_fixture("server.pem").as_os_str(),
            "--tls-key".as_ref(),
            tls_fixture("server-key.pem").as_os_str(),
        ],
    );
    // The topic, made by alice over gRPC with TLS (password from the
    // environment).
    streamhouse(
        &[
            "topic",
            "create",
            TOPIC,
            "--agent",
            &agent.grpc,
            "--tls-ca",
            ca,
            "--user",
            "alice",
        ],
        &[("STREAMHOUSE_PASSWORD", PASSWORD)],
        "",
    );

    let base = json!({
        "bootstrap": agent.kafka, "ca": ca, "topic": TOPIC, "count": 20, "timeout": 10,
        "protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-512", "user": "alice",
        "password": PASSWORD,
    });
    let with = |changes: Value| {
        let mut args = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            args[k] = v.clone();
        }
        args
    };

    let answer = client(&python, with(json!({"case": "roundtrip"})));
    assert_eq!(answer["ok"], true, "{answer}");
    let expected: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    assert_eq!(answer["consumed"], json!(expected));

    // Refused authentications, with the same message for a wrong password
    // and an unknown user.
    for (user, password) in [("alice", "wrong password"), ("nobody", PASSWORD)] {
        let answer = client(
            &python,
            with(json!({"case": "connect", "user": user, "password": password, "timeout": 5})),
        );
        assert_eq!(answer["ok"], false, "{user} was let in: {answer}");
        let auth = errors(&answer)
            .into_iter()
            .find(|(code, _)| code == "_AUTHENTICATION")
            .unwrap_or_else(|| panic!("{user}: no authentication error: {answer}"));
        assert!(
            auth.1.contains("invalid user name or password"),
            "{user}: {}",
            auth.1
        );
    }

    // Plain-text clients to the TLS port: a transport error, soon.
    for protocol in ["PLAINTEXT", "SASL_PLAINTEXT"] {
        let answer = client(
            &python,
            with(json!({"case": "connect", "protocol": protocol, "ca": null, "timeout": 5})),
        );
        assert_eq!(answer["ok"], false, "{protocol} got through: {answer}");
        let errors = errors(&answer);
        assert!(
            errors
                .iter()
                .any(|(code, _)| code == "_TRANSPORT" || code == "_ALL_BROKERS_DOWN"),
            "{protocol}: no transport error: {answer}"
        );
    }
    // The agent still serves alice.
    let answer = client(&python, with(json!({"case": "connect"})));
    assert_eq!(answer["ok"], true, "{answer}");
}
