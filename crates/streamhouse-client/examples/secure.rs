//! The README's security code, compiled and run: starts an agent in this
//! process with TLS (the test certificate of fixtures/tls) that requires
//! authentication, makes user `orders-service` in its metadata store and
//! lets it write to topics `orders-*`, then produces as that user over TLS
//! with the code between the README markers, which README.md holds
//! verbatim (`cargo test -p streamhouse-cli --test readme` compares them).
//!
//! ```text
//! cargo run --package streamhouse-client --example secure
//! ```

use std::path::Path;

use streamhouse_agent::{Agent, AgentConfig, AuthConfig, TlsFiles};
use streamhouse_client::{Admin, Producer, ProducerRecord, Security};
use streamhouse_core::scram::{Credential, Mechanism};
use streamhouse_metadata::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tls");
    let dir = tempfile::tempdir()?;
    let metadata_url = format!("sqlite://{}", dir.path().join("metadata.db").display());
    let store = streamhouse_metadata::open(&metadata_url).await?;
    let password = "correct horse battery staple";
    store
        .upsert_scram_credential(
            "orders-service",
            &Credential::new(Mechanism::Sha512, password, 4096)?,
        )
        .await?;
    let acls: Vec<AclBinding> = [AclOperation::Write, AclOperation::Create]
        .into_iter()
        .map(|operation| AclBinding {
            principal: "User:orders-service".into(),
            host: "*".into(),
            resource_type: ResourceType::Topic,
            resource_name: "orders-".into(),
            pattern_type: PatternType::Prefixed,
            operation,
            permission: AclPermission::Allow,
        })
        .collect();
    store.create_acls(&acls).await?;
    let agent = Agent::start(AgentConfig {
        listen: "127.0.0.1:0".parse()?,
        metadata_url,
        storage_url: format!("file://{}", dir.path().join("objects").display()),
        tls: Some(TlsFiles {
            cert: tls.join("server.pem"),
            key: tls.join("server-key.pem"),
            client_ca: None,
        }),
        auth: AuthConfig {
            required: true,
            ..AuthConfig::default()
        },
        ..AgentConfig::default()
    })
    .await?;
    // The certificate names localhost and 127.0.0.1.
    let addr = format!("localhost:{}", agent.local_addr().port());
    let ca = tls.join("ca.pem");

    // README begin
    let security = Security::new()
        .tls_ca_file(&ca)? // or .tls_system_roots(), or an https:// bootstrap address
        .credentials("orders-service", password);
    let admin = Admin::connect_with(&addr, security.clone()).await?;
    admin
        .create_topic("orders-eu", 3, None, Default::default())
        .await?;
    let producer = Producer::builder()
        .bootstrap(&addr)
        .security(security)
        .build()
        .await?;
    producer
        .send_record(ProducerRecord::new("orders-eu", "order 1"))
        .await?
        .await?;
    producer.close().await?;
    // README end

    println!("produced to orders-eu as User:orders-service over TLS");
    agent.shutdown().await?;
    Ok(())
}
