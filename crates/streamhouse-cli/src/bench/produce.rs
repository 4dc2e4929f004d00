//! `streamhouse bench produce`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use streamhouse_agent::{Agent, AgentConfig};
use streamhouse_client::{Admin, Compression, DeliveryFuture, Producer, ProducerRecord};

/// Records sent back to back per clock reading.
const GROUP: u64 = 16;

use super::{quantile, value};
use crate::BoxError;

#[derive(clap::Args)]
pub struct Args {
    /// Agent to produce to. Default: start an agent in this process with
    /// the embedded defaults in a temporary directory.
    #[arg(long)]
    agent: Option<String>,
    /// Flush interval of the in-process agent, in milliseconds.
    #[arg(long, default_value_t = 10)]
    flush_interval_ms: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Partitions of the topic created for the run.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Tasks sending records.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Producer compression.
    #[arg(long, default_value_t = Compression::Lz4)]
    compression: Compression,
    /// Target records per second over all tasks; 0 sends as fast as
    /// acknowledgements allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Producer batch_size (records per batch).
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Producer batch_timeout, in milliseconds.
    #[arg(long, default_value_t = 5)]
    batch_timeout_ms: u64,
    /// Records each task keeps unacknowledged at most.
    #[arg(long, default_value_t = 20_000)]
    window: usize,
    /// Producer idempotence.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    idempotence: bool,
}

pub async fn run(args: Args) -> Result<(), BoxError> {
    let tmp = tempfile::tempdir()?;
    let (address, agent) = match &args.agent {
        Some(a) => (a.clone(), None),
        None => {
            let mut config = AgentConfig {
                listen: "127.0.0.1:0".parse()?,
                metadata_url: format!("sqlite://{}", tmp.path().join("metadata.db").display()),
                storage_url: format!("file://{}", tmp.path().join("objects").display()),
                ..AgentConfig::default()
            };
            config.pipeline.flush_interval = Duration::from_millis(args.flush_interval_ms);
            let agent = Agent::start(config).await?;
            (agent.local_addr().to_string(), Some(agent))
        }
    };
    let topic = format!(
        "bench-produce-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    Admin::connect(&address)
        .await?
        .create_topic(&topic, args.partitions, None, HashMap::new())
        .await?;
    let producer = std::sync::Arc::new(
        Producer::builder()
            .bootstrap(&address)
            .batch_size(args.batch_size)
            .batch_timeout(Duration::from_millis(args.batch_timeout_ms))
            .compression(args.compression)
            .idempotence(args.idempotence)
            .max_batch_bytes(8 << 20)
            .max_buffered_bytes(256 << 20)
            .build()
            .await?,
    );
    eprintln!(
        "agent {address}{}; topic {topic} ({} partitions); {} tasks; values {} B; producer batch_size {} batch_timeout {} ms compression {} idempotence {}; rate {}",
        if agent.is_some() {
            " (in-process, SQLite + local dir)"
        } else {
            ""
        },
        args.partitions,
        args.concurrency,
        args.record_size,
        args.batch_size,
        args.batch_timeout_ms,
        args.compression,
        args.idempotence,
        if args.rate == 0 {
            "max".to_string()
        } else {
            format!("{}/s", args.rate)
        },
    );
    let values: Vec<bytes::Bytes> = (0..1024).map(|i| value(i, args.record_size)).collect();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for t in 0..args.concurrency {
        let (producer, topic, values) = (producer.clone(), topic.clone(), values.clone());
        let per_task_rate = args.rate as f64 / args.concurrency as f64;
        let window = args.window;
        // The sender hands each group of deliveries to a collector that
        // awaits them in order and notes when each resolves; the bounded
        // channel keeps at most `window` records unacknowledged.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<DeliveryFuture>)>(
            (window / GROUP as usize).max(1),
        );
        let collector = tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            while let Some((t0, group)) = rx.recv().await {
                for d in group {
                    d.await?;
                    latencies.push(t0.elapsed().as_micros() as u32);
                }
            }
            Ok::<_, streamhouse_client::Error>(latencies)
        });
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            let task_start = Instant::now();
            loop {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                if per_task_rate > 0.0 {
                    let due = task_start + Duration::from_secs_f64(sent as f64 / per_task_rate);
                    if due > t0 {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                // One clock reading per group of records sent back to back.
                let t0 = Instant::now();
                let mut group = Vec::with_capacity(GROUP as usize);
                for _ in 0..GROUP {
                    let value = values[(sent as usize + t) % values.len()].clone();
                    let record = ProducerRecord::new(topic.as_str(), value);
                    group.push(producer.send_record(record).await?);
                    sent += 1;
                }
                if tx.send((t0, group)).await.is_err() {
                    break;
                }
            }
            drop(tx);
            collector.await.expect("collector task")
        }));
    }
    let mut latencies: Vec<u64> = Vec::new();
    for t in tasks {
        latencies.extend(t.await??.into_iter().map(u64::from));
    }
    let elapsed = start.elapsed().as_secs_f64();
    producer.close().await?;
    if let Some(agent) = agent {
        agent.shutdown().await?;
    }
    latencies.sort_unstable();
    let records = latencies.len() as f64;
    let records_per_sec = records / elapsed;
    let mb_per_sec = records * args.record_size as f64 / elapsed / 1e6;
    let (p50, p99, p999) = (
        quantile(&latencies, 0.5) as f64 / 1000.0,
        quantile(&latencies, 0.99) as f64 / 1000.0,
        quantile(&latencies, 0.999) as f64 / 1000.0,
    );
    eprintln!(
        "{records:.0} records in {elapsed:.1} s: {records_per_sec:.0} records/s, {mb_per_sec:.1} MB/s of values; ack latency p50 {p50:.2} ms, p99 {p99:.2} ms, p999 {p999:.2} ms"
    );
    println!(
        r#"{{"bench":"produce","partitions":{},"record_size":{},"concurrency":{},"compression":"{}","batch_size":{},"batch_timeout_ms":{},"idempotence":{},"target_rate":{},"records":{records:.0},"seconds":{elapsed:.2},"records_per_sec":{records_per_sec:.0},"mb_per_sec":{mb_per_sec:.1},"ack_p50_ms":{p50:.3},"ack_p99_ms":{p99:.3},"ack_p999_ms":{p999:.3}}}"#,
        args.partitions,
        args.record_size,
        args.concurrency,
        args.compression,
        args.batch_size,
        args.batch_timeout_ms,
        args.idempotence,
        args.rate,
    );
    Ok(())
}
