//! What the security tests share: the test certificates, a TLS client
//! (rustls) that reports the agent's certificate, HTTPS requests, users
//! and ACLs in a metadata store, and a raw Kafka SASL client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use streamhouse_core::scram::{self, Credential, Mechanism};
use streamhouse_metadata::{
    AclBinding, AclOperation, AclPermission, MetadataStore, PatternType, ResourceType,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A file of `fixtures/tls/`.
pub fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/tls")
        .join(name)
        .canonicalize()
        .unwrap_or_else(|e| panic!("fixtures/tls/{name}: {e}"))
}

fn connector(ca: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr` that verified the agent's certificate
/// against `ca` for the name `localhost`.
pub async fn tls_connect(
    addr: &str,
    ca: &Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector(ca).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// The DER of the leaf certificate the agent at `addr` presents now.
pub async fn peer_certificate(addr: &str, ca: &Path) -> Vec<u8> {
    let tls = tls_connect(addr, ca).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The DER of the first certificate of a PEM file.
pub fn pem_certificate(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// `GET path` on a stream; the status code and body of the answer.
pub async fn http_get(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))??;
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Saves SCRAM-SHA-256 and SCRAM-SHA-512 credentials of `user`.
pub async fn create_user(metadata: &dyn MetadataStore, user: &str, password: &str) {
    for mechanism in Mechanism::ALL {
        let credential = Credential::new(mechanism, password, scram::MIN_ITERATIONS).unwrap();
        metadata
            .upsert_scram_credential(user, &credential)
            .await
            .unwrap();
    }
}

/// Allows `principal` every operation on every topic and group, and on
/// the cluster.
pub async fn allow_everything(metadata: &dyn MetadataStore, principal: &str) {
    let acls: Vec<AclBinding> = [
        (ResourceType::Topic, "*"),
        (ResourceType::Group, "*"),
        (ResourceType::Cluster, "kafka-cluster"),
    ]
    .into_iter()
    .map(|(resource_type, name)| AclBinding {
        principal: principal.to_string(),
        host: "*".into(),
        resource_type,
        resource_name: name.into(),
        pattern_type: PatternType::Literal,
        operation: AclOperation::All,
        permission: AclPermission::Allow,
    })
    .collect();
    metadata.create_acls(&acls).await.unwrap();
}

/// One Kafka request frame (header v1: not flexible) with `body`.
fn frame(api_key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let client = b"security-tests";
    let mut m = Vec::new();
    m.extend_from_slice(&api_key.to_be_bytes());
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(&correlation.to_be_bytes());
    m.extend_from_slice(&(client.len() as i16).to_be_bytes());
    m.extend_from_slice(client);
    m.extend_from_slice(body);
    let mut out = (m.len() as i32).to_be_bytes().to_vec();
    out.extend(m);
    out
}

/// Sends a request and reads its answer's body (after the correlation id).
async fn call(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    api_key: i16,
    version: i16,
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(&frame(api_key, version, 7, body)).await?;
    let len = stream.read_i32().await?;
    let mut answer = vec![0; usize::try_from(len).map_err(std::io::Error::other)?];
    stream.read_exact(&mut answer).await?;
    if answer.len() < 4 || answer[..4] != 7i32.to_be_bytes() {
        return Err(std::io::Error::other("bad correlation id"));
    }
    Ok(answer[4..].to_vec())
}

/// A SaslAuthenticate v0 answer: error code, message, auth bytes.
fn authenticate_answer(body: &[u8]) -> (i16, Option<String>, Vec<u8>) {
    let code = i16::from_be_bytes([body[0], body[1]]);
    let len = i16::from_be_bytes([body[2], body[3]]);
    let (message, rest) = if len < 0 {
        (None, &body[4..])
    } else {
        let end = 4 + len as usize;
        (
            Some(String::from_utf8_lossy(&body[4..end]).to_string()),
            &body[end..],
        )
    };
    let n = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]).max(0) as usize;
    (code, message, rest[4..4 + n].to_vec())
}

fn bytes_field(b: &[u8]) -> Vec<u8> {
    let mut out = (b.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(b);
    out
}

/// Authenticates a Kafka connection by SCRAM (SaslHandshake v1 and
/// SaslAuthenticate v0). `Err` carries the agent's refusal message, or
/// the I/O error.
pub async fn scram_authenticate(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    mechanism: Mechanism,
    user: &str,
    password: &str,
) -> Result<(), String> {
    let name = mechanism.name().as_bytes();
    let mut body = (name.len() as i16).to_be_bytes().to_vec();
    body.extend_from_slice(name);
    let answer = call(stream, 17, 1, &body)
        .await
        .map_err(|e| format!("SaslHandshake: {e}"))?;
    let code = i16::from_be_bytes([answer[0], answer[1]]);
    if code != 0 {
        return Err(format!("SaslHandshake error code {code}"));
    }
    let mut client = scram::Client::new(mechanism, user, password);
    let answer = call(stream, 36, 0, &bytes_field(&client.client_first()))
        .await
        .map_err(|e| format!("SaslAuthenticate (first): {e}"))?;
    let (code, message, server_first) = authenticate_answer(&answer);
    if code != 0 {
        return Err(message.unwrap_or_else(|| format!("error code {code}")));
    }
    let client_final = client
        .client_final(&server_first)
        .map_err(|e| format!("server-first: {e}"))?;
    let answer = call(stream, 36, 0, &bytes_field(&client_final))
        .await
        .map_err(|e| format!("SaslAuthenticate (final): {e}"))?;
    let (code, message, server_final) = authenticate_answer(&answer);
    if code != 0 {
        return Err(message.unwrap_or_else(|| format!("error code {code}")));
    }
    client
        .verify_server_final(&server_final)
        .map_err(|e| format!("server-final: {e}"))
}
