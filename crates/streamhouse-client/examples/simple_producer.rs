//! A self-contained producer: starts an agent in this process (SQLite and a
//! local object directory in a temporary directory), creates a topic, sends
//! keyed records and waits for their offsets.
//!
//! ```text
//! cargo run --package streamhouse-client --example simple_producer
//! ```

use std::collections::HashMap;

use streamhouse_agent::{Agent, AgentConfig};
use streamhouse_client::{Admin, Producer, ProducerRecord};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let agent = Agent::start(AgentConfig {
        listen: "127.0.0.1:0".parse()?,
        metadata_url: format!("sqlite://{}", dir.path().join("metadata.db").display()),
        storage_url: format!("file://{}", dir.path().join("objects").display()),
        ..AgentConfig::default()
    })
    .await?;
    let address = agent.local_addr().to_string();
    println!("agent listening on {address}");

    Admin::connect(&address)
        .await?
        .create_topic("orders", 3, Some(86_400_000), HashMap::new())
        .await?;

    let producer = Producer::builder().bootstrap(&address).build().await?;
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let record = ProducerRecord::new("orders", format!("order {i}"))
            .key(format!("user{}", i % 4))
            .header("source", "simple_producer");
        deliveries.push(producer.send_record(record).await?);
    }
    for delivery in deliveries {
        let sent = delivery.await?;
        println!(
            "sent to {} partition {} at offset {}",
            sent.topic, sent.partition, sent.offset
        );
    }
    producer.close().await?;
    agent.shutdown().await?;
    Ok(())
}
