//! The README's transactions code, compiled and run: starts an agent in
//! this process (SQLite and a local object directory in a temporary
//! directory), writes a few records to `orders`, then copies what a member
//! of group `copier` polls into `out` in one transaction, consumed offsets
//! included, with the code between the README markers, which README.md
//! holds verbatim (`cargo test -p streamhouse-cli --test readme` compares
//! them).
//!
//! ```text
//! cargo run --package streamhouse-client --example transactions
//! ```

use std::collections::HashMap;
use std::time::Duration;

use streamhouse_agent::{Agent, AgentConfig};
use streamhouse_client::{
    Admin, AutoOffsetReset, Consumer, IsolationLevel, Producer, ProducerRecord,
};

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
    let admin = Admin::connect(&addr).await?;
    admin
        .create_topic("orders", 3, None, HashMap::new())
        .await?;
    admin.create_topic("out", 3, None, HashMap::new()).await?;
    let input = Producer::builder().bootstrap(&addr).build().await?;
    for i in 0..6 {
        drop(
            input
                .send_record(ProducerRecord::new("orders", format!("order {i}")))
                .await?,
        );
    }
    input.close().await?;
    let consumer = Consumer::builder()
        .bootstrap(&addr)
        .group_id("copier")
        .subscribe(["orders"])
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .isolation_level(IsolationLevel::ReadCommitted)
        .build()
        .await?;

    // README begin
    let producer = Producer::builder()
        .bootstrap(&addr)
        .transactional_id("copier-1")
        .build()
        .await?;
    producer.init_transactions().await?; // aborts what an older instance left open, fences it
    let records = consumer.poll(Duration::from_secs(5)).await?;
    producer.begin_transaction()?;
    for record in &records {
        let out = ProducerRecord::new("out", record.value.clone().unwrap_or_default());
        let _delivery = producer.send_record(out).await?; // commit_transaction checks delivery
    }
    let group = consumer.group_metadata().expect("a group member");
    producer
        .send_offsets_to_transaction(&consumer.positions(), &group)
        .await?;
    producer.commit_transaction().await?; // or abort_transaction()
    // README end

    println!("copied {} records from orders to out", records.len());
    producer.close().await?;
    consumer.close().await?;
    agent.shutdown().await?;
    Ok(())
}
