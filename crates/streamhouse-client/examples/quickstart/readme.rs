use streamhouse_client::Producer;
use streamhouse_metadata::{SqliteMetadataStore, MetadataStore, TopicConfig};
use std::sync::Arc;
use std::collections::HashMap;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Setup metadata store
    let metadata: Arc<dyn MetadataStore> = Arc::new(
        SqliteMetadataStore::new("metadata.db").await?
    );

    // Create topic
    metadata.create_topic(TopicConfig {
        name: "orders".to_string(),
        partition_count: 3,
        retention_ms: Some(86400000), // 1 day
        config: HashMap::new(),
    }).await?;

    // Create producer
    let producer = Producer::builder()
        .metadata_store(metadata)
        .agent_group("prod")
        .compression_enabled(true)
        .build()
        .await?;

    // Send with key-based partitioning
    let result = producer.send(
        "orders",
        Some(b"user123"),    // Key determines partition
        b"order data",       // Value
        None,                // Auto-select partition
    ).await?;

    println!("Sent to partition {} at offset {}",
        result.partition, result.offset);

    // Send to explicit partition
    let result = producer.send(
        "orders",
        Some(b"user456"),
        b"order data 2",
        Some(1),             // Explicit partition
    ).await?;

    // Close producer
    producer.close().await?;

    Ok(())
}
