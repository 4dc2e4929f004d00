//! The security commands of the CLI, as processes:
//!
//! - `streamhouse users create|list|delete` and `streamhouse acl
//!   add|list|remove` round trips on a SQLite store, read back as JSON
//!   (and the stored credentials checked against the passwords given).
//! - secrets stay secret: `--help` does not print passwords from the
//!   environment, and a failing `users create` does not print the
//!   password of the metadata URL or the user's.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use streamhouse_core::scram::Mechanism;

/// Runs `streamhouse` with `args`, `env` and `stdin`.
fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamhouse"))
        .args(args)
        .env_remove("STREAMHOUSE_USER_PASSWORD")
        .env_remove("STREAMHOUSE_METADATA")
        .envs(env.iter().copied())
        .env("STREAMHOUSE_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit before reading its input.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], env: &[(&str, &str)], stdin: &str) -> String {
    let out = run(args, env, stdin);
    assert!(
        out.status.success(),
        "streamhouse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], env: &[(&str, &str)], stdin: &str) -> String {
    let out = run(args, env, stdin);
    assert!(!out.status.success(), "streamhouse {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON: {stdout:?}: {e}"))
}

/// `streamhouse <command> <args...> --metadata <url>`.
fn on_store<'a>(command: &'a str, args: &[&'a str], url: &'a str) -> Vec<&'a str> {
    [&[command][..], args, &["--metadata", url][..]].concat()
}

fn store(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("metadata.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let url = store(dir.path());
    let users = |args: &[&'static str]| on_store("users", args, &url);

    ok(
        &users(&["create", "alice"]),
        &[("STREAMHOUSE_USER_PASSWORD", "alice pw")],
        "",
    );
    ok(
        &users(&["create", "bob", "--mechanism", "SCRAM-SHA-256"]),
        &[],
        "bob pw\n",
    );
    let stderr = fails(&users(&["create", "carol"]), &[], "");
    assert!(stderr.contains("no password"), "{stderr}");
    assert_eq!(
        json_of(&ok(&users(&["list", "--output", "json"]), &[], "")),
        json!([
            {"user": "alice", "mechanisms": ["SCRAM-SHA-256", "SCRAM-SHA-512"]},
            {"user": "bob", "mechanisms": ["SCRAM-SHA-256"]},
        ])
    );
    // The credentials are of the passwords given (stdin without its line
    // end).
    let metadata = streamhouse_metadata::open(&url).await.unwrap();
    let credentials = metadata.scram_credentials().await.unwrap();
    let check = |user: &str, mechanism: Mechanism, password: &str| {
        let c = credentials
            .iter()
            .find(|c| c.user == user && c.credential.mechanism == mechanism)
            .unwrap_or_else(|| panic!("no {mechanism} credential of {user}"));
        assert!(c.credential.verify_password(password), "{user} {mechanism}");
        assert!(!c.credential.verify_password("wrong"), "{user} {mechanism}");
    };
    check("alice", Mechanism::Sha256, "alice pw");
    check("alice", Mechanism::Sha512, "alice pw");
    check("bob", Mechanism::Sha256, "bob pw");

    ok(&users(&["delete", "bob"]), &[], "");
    let stderr = fails(&users(&["delete", "bob"]), &[], "");
    assert!(stderr.contains("no user"), "{stderr}");
    ok(
        &users(&["delete", "alice", "--mechanism", "SCRAM-SHA-256"]),
        &[],
        "",
    );
    assert_eq!(
        json_of(&ok(&users(&["list", "--output", "json"]), &[], "")),
        json!([{"user": "alice", "mechanisms": ["SCRAM-SHA-512"]}])
    );
    // A new password replaces the old one.
    ok(
        &users(&["create", "alice", "--mechanism", "SCRAM-SHA-512"]),
        &[("STREAMHOUSE_USER_PASSWORD", "alice's new pw")],
        "",
    );
    let credentials = metadata.scram_credentials().await.unwrap();
    assert_eq!(credentials.len(), 1);
    assert!(credentials[0].credential.verify_password("alice's new pw"));
    assert!(!credentials[0].credential.verify_password("alice pw"));
    ok(&users(&["delete", "alice"]), &[], "");
    assert_eq!(
        json_of(&ok(&users(&["list", "--output", "json"]), &[], "")),
        json!([])
    );
}

#[test]
fn acl_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let url = store(dir.path());
    let acl = |args: &[&'static str]| on_store("acl", args, &url);
    let list = |args: &[&'static str]| {
        json_of(&ok(
            &acl(&[&["list", "-o", "json"][..], args].concat()),
            &[],
            "",
        ))
    };

    ok(
        &acl(&[
            "add",
            "--principal",
            "User:alice",
            "--topic",
            "orders",
            "--operation",
            "read,write",
        ]),
        &[],
        "",
    );
    ok(
        &acl(&[
            "add",
            "--principal",
            "User:bob",
            "--group",
            "team-",
            "--prefixed",
            "--operation",
            "read",
            "--deny",
            "--host",
            "10.0.0.1",
        ]),
        &[],
        "",
    );
    let stderr = fails(
        &acl(&["add", "--principal", "User:bob", "--operation", "read"]),
        &[],
        "",
    );
    assert!(stderr.contains("name a resource"), "{stderr}");

    let alice = |operation: &str| {
        json!({
            "principal": "User:alice", "host": "*", "resource_type": "topic",
            "resource_name": "orders", "pattern_type": "literal",
            "operation": operation, "permission": "allow",
        })
    };
    let bob = json!({
        "principal": "User:bob", "host": "10.0.0.1", "resource_type": "group",
        "resource_name": "team-", "pattern_type": "prefixed",
        "operation": "read", "permission": "deny",
    });
    let mut all = list(&[]).as_array().unwrap().clone();
    all.sort_by_key(|v| v.to_string());
    let mut expected = vec![alice("read"), alice("write"), bob.clone()];
    expected.sort_by_key(|v| v.to_string());
    assert_eq!(all, expected);
    assert_eq!(list(&["--principal", "User:bob"]), json!([bob]));

    ok(
        &acl(&[
            "remove",
            "--principal",
            "User:alice",
            "--topic",
            "orders",
            "--operation",
            "write",
        ]),
        &[],
        "",
    );
    assert_eq!(list(&["--principal", "User:alice"]), json!([alice("read")]));
    // A literal filter does not remove the prefixed ACL.
    let stderr = fails(
        &acl(&["remove", "--principal", "User:bob", "--group", "team-"]),
        &[],
        "",
    );
    assert!(stderr.contains("no ACL matched"), "{stderr}");
    ok(
        &acl(&[
            "remove",
            "--principal",
            "User:bob",
            "--group",
            "team-",
            "--prefixed",
        ]),
        &[],
        "",
    );
    assert_eq!(list(&["--principal", "User:bob"]), json!([]));
    ok(&acl(&["remove", "--principal", "User:alice"]), &[], "");
    assert_eq!(list(&[]), json!([]));
}

const SECRET: &str = "s3cr3t-7f2a";

fn assert_secret_kept(out: &Output, what: &str) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(SECRET), "{what} printed the secret:\n{text}");
    }
}

#[test]
fn help_and_errors_do_not_print_passwords() {
    let metadata_url = format!("postgres://streamhouse:{SECRET}-db@127.0.0.1:1/streamhouse");
    let env = [
        ("STREAMHOUSE_PASSWORD", SECRET),
        ("STREAMHOUSE_METADATA", metadata_url.as_str()),
        ("STREAMHOUSE_USER_PASSWORD", SECRET),
    ];
    for args in [
        &["agent", "--help"][..],
        &["topic", "list", "--help"],
        &["produce", "--help"],
        &["users", "create", "--help"],
        &["acl", "add", "--help"],
    ] {
        let out = run(args, &env, "");
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty(), "{args:?}: no help");
        assert_secret_kept(&out, &format!("{args:?}"));
    }

    // An unreachable PostgreSQL store, named by the environment and by the
    // flag; the user's password from the environment and from stdin.
    let out = run(
        &["users", "create", "alice"],
        &[
            ("STREAMHOUSE_METADATA", metadata_url.as_str()),
            ("STREAMHOUSE_USER_PASSWORD", SECRET),
        ],
        "",
    );
    assert!(
        !out.status.success(),
        "users create against nothing succeeded"
    );
    assert!(!out.stderr.is_empty(), "no error message");
    assert_secret_kept(&out, "users create (environment)");
    let out = run(
        &["users", "create", "alice", "--metadata", &metadata_url],
        &[],
        &format!("{SECRET}\n"),
    );
    assert!(
        !out.status.success(),
        "users create against nothing succeeded"
    );
    assert_secret_kept(&out, "users create (flag)");
}
