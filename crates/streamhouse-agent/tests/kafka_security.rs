//! SASL on the Kafka listener, over raw frames: SCRAM-SHA-256 and -512
//! logins, failures that do not tell a wrong password from an unknown user
//! and close the connection, requests before authentication, PLAIN only
//! where passwords may cross in the clear, and every served version of
//! SaslHandshake and SaslAuthenticate.

use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_core::scram::Mechanism;

mod common;
use common::kafka::{Conn, User, secure_agent};

const ALICE: User = ("alice", "alice-password");
const SASL_AUTHENTICATION_FAILED: i16 = 58;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const UNSUPPORTED_VERSION: i16 = 35;

async fn metadata_works(conn: &mut Conn) {
    let r: MetadataResponse = conn
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
    assert!(!r.brokers.is_empty());
}

#[tokio::test]
async fn scram_logins_succeed_and_failures_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let agent = secure_agent(&dir, &[ALICE], &[], |_| {}).await;
    for mechanism in Mechanism::ALL {
        let mut conn = Conn::open(&agent).await;
        conn.login_scram(mechanism, ALICE.0, ALICE.1).await.unwrap();
        metadata_works(&mut conn).await;
    }
    let mut messages = Vec::new();
    for (user, password) in [(ALICE.0, "wrong"), ("nobody", ALICE.1)] {
        for mechanism in Mechanism::ALL {
            let mut conn = Conn::open(&agent).await;
            let (code, message) = conn
                .login_scram(mechanism, user, password)
                .await
                .unwrap_err();
            assert_eq!(code, SASL_AUTHENTICATION_FAILED, "{user} {mechanism:?}");
            assert!(conn.closed().await, "{user} {mechanism:?}: still open");
            messages.push((mechanism, message));
        }
    }
    // A wrong password and an unknown user read the same.
    for mechanism in Mechanism::ALL {
        let of: Vec<&String> = messages
            .iter()
            .filter(|(m, _)| *m == mechanism)
            .map(|(_, message)| message)
            .collect();
        assert_eq!(of[0], of[1]);
        assert!(!of[0].contains("nobody") && !of[0].contains("alice"));
    }
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_request_before_authentication_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let agent = secure_agent(&dir, &[ALICE], &[], |_| {}).await;
    // ApiVersions is answered before authentication.
    let mut conn = Conn::open(&agent).await;
    let r: ApiVersionsResponse = conn
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    assert_eq!(r.error_code, 0);
    conn.send(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    )
    .await;
    assert!(conn.closed().await);
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_large_frame_before_authentication_closes_the_connection() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let agent = secure_agent(&dir, &[ALICE], &[], |_| {}).await;
    let mut conn = Conn::open(&agent).await;
    // A frame announcing 1 MiB, over the 512 KiB a client may send before
    // it authenticates: closed before its body is read.
    conn.stream
        .write_all(&(1i32 << 20).to_be_bytes())
        .await
        .unwrap();
    conn.stream.write_all(&[0; 64]).await.unwrap();
    assert!(conn.closed().await);
    // Other connections are served as before.
    let mut conn = Conn::open(&agent).await;
    conn.login_scram(Mechanism::Sha512, ALICE.0, ALICE.1)
        .await
        .unwrap();
    metadata_works(&mut conn).await;
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn plain_needs_tls_unless_plaintext_passwords_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let agent = secure_agent(&dir, &[ALICE], &[], |c| {
        c.auth.allow_plaintext_passwords = false;
    })
    .await;
    let mut conn = Conn::open(&agent).await;
    let (code, offered) = conn.handshake("PLAIN").await;
    assert_eq!(code, UNSUPPORTED_SASL_MECHANISM);
    assert_eq!(offered, ["SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert!(conn.closed().await);
    // SCRAM still works.
    let mut conn = Conn::open(&agent).await;
    conn.login_scram(Mechanism::Sha512, ALICE.0, ALICE.1)
        .await
        .unwrap();
    metadata_works(&mut conn).await;
    agent.shutdown().await.unwrap();

    // Allowed: offered, and a login works.
    let dir = tempfile::tempdir().unwrap();
    let agent = secure_agent(&dir, &[ALICE], &[], |_| {}).await;
    let mut conn = Conn::open(&agent).await;
    let (code, offered) = conn.handshake("NONE").await;
    assert_eq!(code, UNSUPPORTED_SASL_MECHANISM);
    assert!(offered.iter().any(|m| m == "PLAIN"));
    let mut conn = Conn::open(&agent).await;
    conn.login_plain(ALICE.0, ALICE.1).await.unwrap();
    metadata_works(&mut conn).await;
    let mut conn = Conn::open(&agent).await;
    let (code, _) = conn.login_plain(ALICE.0, "wrong").await.unwrap_err();
    assert_eq!(code, SASL_AUTHENTICATION_FAILED);
    assert!(conn.closed().await);
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_served_version_of_the_sasl_apis_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let agent = secure_agent(&dir, &[ALICE], &[], |_| {}).await;
    let mut conn = Conn::open(&agent).await;
    let r: ApiVersionsResponse = conn
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    let range = |api: ApiKey| {
        let k = r.api_keys.iter().find(|k| k.api_key == api as i16).unwrap();
        k.min_version..=k.max_version
    };
    assert_eq!(range(ApiKey::SaslHandshake), 1..=1);
    assert_eq!(range(ApiKey::SaslAuthenticate), 0..=2);
    // Handshake v0 (the codec knows it; not served) is answered as such.
    let r: SaslHandshakeResponse = conn
        .call(
            ApiKey::SaslHandshake,
            0,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        )
        .await;
    assert_eq!(r.error_code, UNSUPPORTED_VERSION);
    for version in range(ApiKey::SaslAuthenticate) {
        for mechanism in Mechanism::ALL {
            let mut conn = Conn::open(&agent).await;
            conn.login_scram_at(version, mechanism, ALICE.0, ALICE.1)
                .await
                .unwrap_or_else(|e| panic!("v{version} {mechanism:?}: {e:?}"));
            metadata_works(&mut conn).await;
        }
    }
    agent.shutdown().await.unwrap();
}
