//! Writes records through the pipeline with the embedded defaults (SQLite
//! metadata and a local object directory under `./streamhouse-data`) and
//! reads them back.
//!
//! ```text
//! cargo run --release -p streamhouse-storage --example write_and_read
//! ```

use std::collections::HashMap;

use bytes::Bytes;
use streamhouse_core::{Compression, NewRecord, RecordBatch};
use streamhouse_metadata::TopicConfig;
use streamhouse_storage::{
    PipelineConfig, Reader, ReaderConfig, S3Options, WritePipeline, open_object_store,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let metadata = streamhouse_metadata::open("sqlite://streamhouse-data/metadata.db").await?;
    let store = open_object_store("file://streamhouse-data/objects", &S3Options::default())?;
    if metadata.get_topic("orders").await?.is_none() {
        metadata
            .create_topic(TopicConfig {
                name: "orders".into(),
                partition_count: 3,
                retention_ms: Some(86_400_000),
                config: HashMap::new(),
            })
            .await?;
    }

    // Ten LZ4 batches of 100 records, to three partitions, appended
    // concurrently: they share objects and get offsets at commit.
    let pipeline = WritePipeline::new(store.clone(), metadata.clone(), PipelineConfig::default())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut acks = Vec::new();
    for b in 0..10u32 {
        let batch = RecordBatch::from_records((0..100).map(|i| {
            NewRecord::new(
                now,
                Some(Bytes::from(format!("user{i}"))),
                format!("order {b}-{i}"),
            )
        }))
        .with_compression(Compression::Lz4)
        .encode()?;
        acks.push((b % 3, pipeline.submit("orders", b % 3, batch).await?));
    }
    for (partition, ack) in acks {
        let a = ack.await?;
        println!(
            "partition {partition}: committed at offset {}",
            a.base_offset
        );
    }
    let stats = pipeline.stats();
    pipeline.close().await;
    println!("{} objects written for 10 batches", stats.objects_written);

    // Read partition 0 back from the object store.
    let reader = Reader::new(store, metadata, None, ReaderConfig::default());
    let result = reader.read("orders", 0, 0, 1 << 20).await?;
    let mut records = 0;
    for bytes in &result.batches {
        let batch = RecordBatch::decode(bytes)?;
        if let Some((offset, _, record)) = batch.iter().next() {
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
            println!(
                "offset {offset}: {value} (+{} more)",
                batch.records.len() - 1
            );
        }
        records += batch.records.len();
    }
    println!(
        "read {records} records of partition 0; next offset {}",
        result.next_offset
    );
    Ok(())
}
