//! The README's consumer code, compiled and run: starts an agent in this
//! process (SQLite and a local object directory in a temporary directory),
//! writes a few records to `orders`, then reads them as a member of group
//! `billing` with the code between the README markers, which README.md
//! holds verbatim (`cargo test -p streamhouse-cli --test readme` compares
//! them).
//!
//! ```text
//! cargo run --package streamhouse-client --example consumer
//! ```

use std::collections::HashMap;
use std::time::Duration;

use streamhouse_agent::{Agent, AgentConfig};
use streamhouse_client::{Admin, AutoOffsetReset, Consumer, Producer, ProducerRecord};

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
    let addr = agent.local_addr().to_string();
    Admin::connect(&addr)
        .await?
        .create_topic("orders", 3, None, HashMap::new())
        .await?;
    let producer = Producer::builder().bootstrap(&addr).build().await?;
    for i in 0..6 {
        let record = ProducerRecord::new("orders", format!("order {i}")).key(format!("user{i}"));
        drop(producer.send_record(record).await?);
    }
    producer.close().await?;

    // README begin
    let consumer = Consumer::builder()
        .bootstrap(&addr) // any agent's host:port, or .metadata_store(store)
        .group_id("billing")
        .subscribe(["orders"]) // or .assign(partitions) without a group
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .build()
        .await?;
    for record in consumer.poll(Duration::from_secs(5)).await? {
        println!("{} {}: {:?}", record.partition, record.offset, record.value);
    }
    consumer.commit().await?; // or auto-commit (default, every 5 s)
    consumer.close().await?; // leaves the group at once
    // README end

    agent.shutdown().await?;
    Ok(())
}
