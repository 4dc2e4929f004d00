//! Password guessing against the Kafka listener: many connections try
//! wrong SCRAM passwords for `victim` (raw SaslHandshake and
//! SaslAuthenticate frames, with `streamhouse_core::scram::Client`) while
//! another user produces and consumes. The other user is never refused;
//! the attacker soon gets "too many failed attempts" refusals, and the
//! number of guesses the agent actually checked stays within the user's
//! budget (a burst of 10, refilled at 2 a second) plus the guesses already
//! in flight, far below the number made.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use streamhouse_agent::{Agent, AgentConfig, AuthConfig};
use streamhouse_client::{Admin, AutoOffsetReset, Consumer, Producer, Security, TopicPartition};
use streamhouse_core::scram::Mechanism;
use tokio::net::TcpStream;

mod support;
use support::kafka::shared_stores;
use support::security::{create_user, scram_authenticate};

const ATTACKERS: usize = 16;
const BURST: f64 = 10.0;
const REFILL_PER_SECOND: f64 = 2.0;

#[derive(Default)]
struct Tally {
    invalid: AtomicUsize,
    too_many: AtomicUsize,
    other: std::sync::Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guessing_one_password_is_bounded_and_does_not_affect_other_users() {
    let dir = tempfile::tempdir().unwrap();
    let (metadata, store) = shared_stores(dir.path()).await;
    create_user(metadata.as_ref(), "victim", "the victim's real password").await;
    create_user(metadata.as_ref(), "bob", "bob's password").await;
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        kafka_listen: Some("127.0.0.1:0".parse().unwrap()),
        unsafe_no_fsync: true,
        auth: AuthConfig {
            required: true,
            super_users: vec!["User:bob".into()],
            // bob's native client sends its password over plain gRPC.
            allow_plaintext_passwords: true,
            ..AuthConfig::default()
        },
        ..AgentConfig::default()
    };
    config.pipeline.linger = Duration::from_millis(2);
    let agent = Agent::start_with(config, metadata, store).await.unwrap();
    let grpc = agent.local_addr().to_string();
    let kafka = agent.kafka_addr().unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|a| {
            let (stop, tally, kafka) = (stop.clone(), tally.clone(), kafka.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let mut conn = TcpStream::connect(&kafka).await.unwrap();
                    let guess = format!("guess-{a}-{n}");
                    match scram_authenticate(&mut conn, Mechanism::Sha256, "victim", &guess).await {
                        Ok(()) => panic!("{guess} was accepted"),
                        Err(m) if m.contains("too many failed attempts") => {
                            tally.too_many.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(m) if m.contains("invalid user name or password") => {
                            tally.invalid.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(m) => tally.other.lock().unwrap().push(m),
                    }
                }
            })
        })
        .collect();

    // Meanwhile bob works, over gRPC and over Kafka.
    let bob = Security::new()
        .credentials("bob", "bob's password")
        .allow_plaintext_credentials();
    Admin::connect_with(&grpc, bob.clone())
        .await
        .unwrap()
        .create_topic("work", 1, None, HashMap::new())
        .await
        .unwrap();
    let producer = Producer::builder()
        .bootstrap(&grpc)
        .security(bob.clone())
        .build()
        .await
        .unwrap();
    let consumer = Consumer::builder()
        .bootstrap(&grpc)
        .security(bob)
        .assign([TopicPartition::new("work", 0)])
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .build()
        .await
        .unwrap();
    let mut consumed = 0;
    let mut produced = 0;
    let mut bob_on_kafka = 0;
    while started.elapsed() < Duration::from_secs(6) || tally.too_many.load(Ordering::SeqCst) < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no lockout after 60 s: {} refused as invalid",
            tally.invalid.load(Ordering::SeqCst)
        );
        producer
            .send("work", None, format!("w{produced}").as_bytes(), Some(0))
            .await
            .unwrap();
        produced += 1;
        consumed += consumer
            .poll(Duration::from_millis(100))
            .await
            .unwrap()
            .len();
        let mut conn = TcpStream::connect(&kafka).await.unwrap();
        scram_authenticate(&mut conn, Mechanism::Sha512, "bob", "bob's password")
            .await
            .unwrap_or_else(|e| panic!("bob was refused on Kafka during the attack: {e}"));
        bob_on_kafka += 1;
    }
    stop.store(true, Ordering::SeqCst);
    for a in attackers {
        a.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    while consumed < produced {
        let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
        assert!(!records.is_empty(), "bob consumed {consumed} of {produced}");
        consumed += records.len();
    }
    assert_eq!(consumed, produced);
    assert!(bob_on_kafka > 0);

    let invalid = tally.invalid.load(Ordering::SeqCst);
    let too_many = tally.too_many.load(Ordering::SeqCst);
    let other = tally.other.lock().unwrap().clone();
    eprintln!(
        "{elapsed:.1} s: {invalid} guesses checked, {too_many} refused as too many; \
         bob: {produced} records, {bob_on_kafka} Kafka authentications"
    );
    assert!(other.is_empty(), "unexpected refusals: {other:?}");
    // Checked guesses: the budget, what it refilled by, and at most one
    // guess in flight per attacker whenever it had one token.
    let bound = BURST + REFILL_PER_SECOND * elapsed * 2.0 + ATTACKERS as f64;
    assert!(
        (invalid as f64) <= bound,
        "{invalid} guesses checked in {elapsed:.1} s (bound {bound:.0}); {too_many} refused"
    );
    assert!(
        too_many as f64 > bound,
        "the attack was too small to show the bound: {too_many} refused, {invalid} checked"
    );
    producer.close().await.unwrap();
    agent.shutdown().await.unwrap();
}
