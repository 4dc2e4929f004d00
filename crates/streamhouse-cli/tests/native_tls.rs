//! The native client (gRPC) against agents with TLS and required
//! authentication:
//!
//! - with the CA and a user's credentials, the Producer and Consumer
//!   produce and consume; without credentials, or with a wrong password,
//!   they fail with `AuthenticationFailed`, which is not retryable; without
//!   TLS settings they cannot talk to the TLS port at all.
//! - a client certificate signed by the client CA (CN=alice) authenticates
//!   as `User:alice`, whose ACLs apply; one with the same name from
//!   another CA is refused at the handshake.
//! - `streamhouse topic list --tls-ca --user` with `STREAMHOUSE_PASSWORD`
//!   against an agent process.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use streamhouse_agent::{Agent, AgentConfig, AuthConfig, RunningAgent, TlsFiles};
use streamhouse_client::{
    Admin, AutoOffsetReset, Consumer, Error, ErrorCode, Producer, Security, TopicPartition,
};
use streamhouse_metadata::{
    AclBinding, AclOperation, AclPermission, MetadataStore, PatternType, ResourceType,
};

mod support;
use support::kafka::{AgentProcess, shared_stores};
use support::security::{create_user, tls_fixture};

const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bob's long password";

/// An in-process agent with TLS (and the client CA) that requires
/// authentication; `User:bob` is a super user, and bob exists.
async fn secure_agent() -> (RunningAgent, Arc<dyn MetadataStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (metadata, store) = shared_stores(dir.path()).await;
    create_user(metadata.as_ref(), BOB, BOB_PASSWORD).await;
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        kafka_listen: None,
        unsafe_no_fsync: true,
        tls: Some(TlsFiles {
            cert: tls_fixture("server.pem"),
            key: tls_fixture("server-key.pem"),
            client_ca: Some(tls_fixture("ca.pem")),
        }),
        auth: AuthConfig {
            required: true,
            super_users: vec![format!("User:{BOB}")],
            ..AuthConfig::default()
        },
        ..AgentConfig::default()
    };
    config.pipeline.linger = Duration::from_millis(2);
    let agent = Agent::start_with(config, metadata.clone(), store)
        .await
        .unwrap();
    (agent, metadata, dir)
}

fn tls() -> Security {
    Security::new().tls_ca_file(tls_fixture("ca.pem")).unwrap()
}

/// Produces `count` records to partition 0 of `topic` and waits for each.
async fn produce(addr: &str, security: Security, topic: &str, count: usize) -> Result<(), Error> {
    let producer = Producer::builder()
        .bootstrap(addr)
        .security(security)
        .build()
        .await?;
    for i in 0..count {
        producer
            .send(topic, None, format!("v{i}").as_bytes(), Some(0))
            .await?;
    }
    producer.close().await
}

/// Reads partition 0 of `topic` from the beginning until `count` values.
async fn consume(
    addr: &str,
    security: Security,
    topic: &str,
    count: usize,
) -> Result<Vec<String>, Error> {
    let consumer = Consumer::builder()
        .bootstrap(addr)
        .security(security)
        .assign([TopicPartition::new(topic, 0)])
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .build()
        .await?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < count {
        assert!(tokio::time::Instant::now() < deadline, "only {out:?}");
        for r in consumer.poll(Duration::from_millis(500)).await? {
            out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    Ok(out)
}

/// The error of `call`, which must fail within 30 s.
async fn failure<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, Error>>,
) -> Error {
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s"))
        .expect_err(what)
}

fn assert_authentication_failed(what: &str, e: &Error) {
    assert_eq!(
        e.code(),
        Some(ErrorCode::AuthenticationFailed),
        "{what}: {e}"
    );
    assert!(!e.is_retryable(), "{what}: retryable: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_over_tls_with_credentials() {
    let (agent, _metadata, _dir) = secure_agent().await;
    let addr = agent.local_addr().to_string();
    let bob = tls().credentials(BOB, BOB_PASSWORD);
    Admin::connect_with(&addr, bob.clone())
        .await
        .unwrap()
        .create_topic("orders", 1, None, HashMap::new())
        .await
        .unwrap();
    produce(&addr, bob.clone(), "orders", 10).await.unwrap();
    let values = consume(&addr, bob, "orders", 10).await.unwrap();
    assert_eq!(values, (0..10).map(|i| format!("v{i}")).collect::<Vec<_>>());

    for (what, security) in [
        ("no credentials", tls()),
        (
            "a wrong password",
            tls().credentials(BOB, "not bob's password"),
        ),
        ("an unknown user", tls().credentials("eve", BOB_PASSWORD)),
    ] {
        let e = failure(what, produce(&addr, security.clone(), "orders", 1)).await;
        assert_authentication_failed(&format!("producer, {what}"), &e);
        let e = failure(what, consume(&addr, security.clone(), "orders", 1)).await;
        assert_authentication_failed(&format!("consumer, {what}"), &e);
        let e = failure(what, async {
            Admin::connect_with(&addr, security)
                .await?
                .list_topics()
                .await
        })
        .await;
        assert_authentication_failed(&format!("admin, {what}"), &e);
    }

    // No TLS settings: the TLS port does not speak plain HTTP/2.
    let plain = Security::new().credentials(BOB, BOB_PASSWORD);
    let e = failure("no TLS", async {
        Admin::connect_with(&addr, plain.clone())
            .await?
            .list_topics()
            .await
    })
    .await;
    assert_ne!(e.code(), Some(ErrorCode::AuthenticationFailed), "{e}");
    failure("no TLS, producer", produce(&addr, plain, "orders", 1)).await;
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_authenticates_as_its_common_name() {
    let (agent, metadata, _dir) = secure_agent().await;
    let addr = agent.local_addr().to_string();
    let admin = Admin::connect_with(&addr, tls().credentials(BOB, BOB_PASSWORD))
        .await
        .unwrap();
    for topic in ["alice-topic", "bobs-topic"] {
        admin
            .create_topic(topic, 1, None, HashMap::new())
            .await
            .unwrap();
    }
    let acls: Vec<AclBinding> = [AclOperation::Write, AclOperation::Describe]
        .into_iter()
        .map(|operation| AclBinding {
            principal: "User:alice".into(),
            host: "*".into(),
            resource_type: ResourceType::Topic,
            resource_name: "alice-topic".into(),
            pattern_type: PatternType::Literal,
            operation,
            permission: AclPermission::Allow,
        })
        .collect();
    metadata.create_acls(&acls).await.unwrap();
    // Agents read ACLs again every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let read = |name: &str| std::fs::read(tls_fixture(name)).unwrap();
    let alice = tls().client_certificate(read("alice.pem"), read("alice-key.pem"));
    produce(&addr, alice.clone(), "alice-topic", 3)
        .await
        .unwrap();
    // alice is alice, not a super user: bob's topic is refused by ACLs.
    let e = failure(
        "alice writes bob's topic",
        produce(&addr, alice, "bobs-topic", 1),
    )
    .await;
    assert_eq!(e.code(), Some(ErrorCode::AuthorizationFailed), "{e}");
    let values = consume(
        &addr,
        tls().credentials(BOB, BOB_PASSWORD),
        "alice-topic",
        3,
    )
    .await
    .unwrap();
    assert_eq!(values, ["v0", "v1", "v2"]);

    // CN=alice from another CA: refused at the handshake, so no answer of
    // the agent at all.
    let mallory = tls().client_certificate(read("mallory.pem"), read("mallory-key.pem"));
    let e = failure("mallory", produce(&addr, mallory.clone(), "alice-topic", 1)).await;
    assert_eq!(e.code(), None, "mallory got an agent's answer: {e}");
    let e = failure("mallory", async {
        Admin::connect_with(&addr, mallory)
            .await?
            .list_topics()
            .await
    })
    .await;
    assert_eq!(e.code(), None, "mallory got an agent's answer: {e}");
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_topic_list_with_tls_and_a_password_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (metadata, _) = shared_stores(dir.path()).await;
    create_user(metadata.as_ref(), BOB, BOB_PASSWORD).await;
    drop(metadata);
    let agent = AgentProcess::start_with_args(
        dir.path(),
        "cli-tls",
        [
            "--require-auth".as_ref(),
            "--super-users".as_ref(),
            "User:bob".as_ref(),
            "--tls-cert".as_ref(),
            tls_fixture("server.pem").as_os_str(),
            "--tls-key".as_ref(),
            tls_fixture("server-key.pem").as_os_str(),
        ],
    );
    let ca = tls_fixture("ca.pem");
    // The user name comes after the subcommand and the password from the
    // environment, as the CLI's help recommends.
    let cli = |args: &[&str], password: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_streamhouse"));
        command
            .args(args)
            .args(["--agent", &agent.grpc, "--tls-ca"])
            .arg(&ca)
            .env("STREAMHOUSE_LOG", "error")
            .env_remove("STREAMHOUSE_PASSWORD");
        if let Some(p) = password {
            command.args(["--user", BOB]).env("STREAMHOUSE_PASSWORD", p);
        }
        command.output().unwrap()
    };
    let out = cli(&["topic", "create", "payments"], Some(BOB_PASSWORD));
    assert!(out.status.success(), "{out:?}");
    let out = cli(&["topic", "list", "--output", "json"], Some(BOB_PASSWORD));
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("\"payments\""), "{stdout}");

    let out = cli(&["topic", "list"], Some("wrong-pw-7531"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        !stderr.contains("wrong-pw-7531"),
        "the password was printed: {stderr}"
    );
    let out = cli(&["topic", "list"], None);
    assert!(!out.status.success(), "listed without credentials");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requires authentication"), "{stderr}");
    // --user without any password is refused before connecting.
    let out = cli(&["topic", "list", "--user", BOB], None);
    assert!(!out.status.success(), "listed without a password");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a password"), "{stderr}");
    // Both flags given on the command line work too.
    let out = cli(
        &["topic", "list", "--user", BOB, "--password", BOB_PASSWORD],
        None,
    );
    assert!(out.status.success(), "{out:?}");
}
