//! `streamhouse bench consume` and `streamhouse bench e2e`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use streamhouse_agent::{Agent, AgentConfig, RunningAgent};
use streamhouse_client::{
    Admin, AutoOffsetReset, Compression, Consumer, Producer, ProducerRecord, TopicPartition,
};

use super::{quantile, value};
use crate::BoxError;

#[derive(clap::Args)]
pub struct ConsumeArgs {
    /// Records to pre-fill and read back.
    #[arg(long, default_value_t = 5_000_000)]
    records: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Producer compression used to fill the topic.
    #[arg(long, default_value_t = Compression::Lz4)]
    compression: Compression,
    /// Consumer max_poll_records.
    #[arg(long, default_value_t = 10_000)]
    max_poll_records: usize,
    /// Read cache of the reading agent, bytes (the agent's default).
    #[arg(long, default_value_t = 1 << 30)]
    read_cache_bytes: usize,
}

#[derive(clap::Args)]
pub struct E2eArgs {
    /// Records per second to produce.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bytes per record value (at least 16).
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Agent flush linger, milliseconds.
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Producer batch_timeout, milliseconds.
    #[arg(long, default_value_t = 5)]
    batch_timeout_ms: u64,
    /// Consumer fetch_max_wait, milliseconds.
    #[arg(long, default_value_t = 100)]
    fetch_max_wait_ms: u64,
}

async fn agent(
    dir: &std::path::Path,
    linger: Duration,
    read_cache_bytes: usize,
) -> Result<RunningAgent, BoxError> {
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse()?,
        metadata_url: format!("sqlite://{}", dir.join("metadata.db").display()),
        storage_url: format!("file://{}", dir.join("objects").display()),
        ..AgentConfig::default()
    };
    config.pipeline.linger = linger;
    config.reader.cache_bytes = read_cache_bytes;
    Ok(Agent::start(config).await?)
}

async fn fill(address: &str, topic: &str, args: &ConsumeArgs) -> Result<(), BoxError> {
    let producer = Producer::builder()
        .bootstrap(address)
        .batch_size(1000)
        .batch_timeout(Duration::from_millis(5))
        .compression(args.compression)
        .max_batch_bytes(8 << 20)
        .max_buffered_bytes(256 << 20)
        .build()
        .await?;
    let values: Vec<bytes::Bytes> = (0..1024).map(|i| value(i, args.record_size)).collect();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..args.records {
        let record = ProducerRecord::new(topic, values[i as usize % values.len()].clone());
        pending.push_back(producer.send_record(record).await?);
        if pending.len() >= 200_000 {
            pending.pop_front().expect("non-empty").await?;
        }
    }
    for d in pending {
        d.await?;
    }
    producer.close().await?;
    Ok(())
}

pub async fn consume(args: ConsumeArgs) -> Result<(), BoxError> {
    let tmp = tempfile::tempdir()?;
    let topic = "bench-consume";
    let writer = agent(tmp.path(), Duration::from_millis(10), args.read_cache_bytes).await?;
    let address = writer.local_addr().to_string();
    Admin::connect(&address)
        .await?
        .create_topic(topic, args.partitions, None, HashMap::new())
        .await?;
    eprintln!(
        "filling {topic}: {} records of {} B, {}",
        args.records, args.record_size, args.compression
    );
    fill(&address, topic, &args).await?;
    writer.shutdown().await?;
    // A fresh agent: nothing in memory, every byte comes from storage.
    let reader = agent(tmp.path(), Duration::from_millis(10), args.read_cache_bytes).await?;
    let address = reader.local_addr().to_string();
    let consumer = Consumer::builder()
        .bootstrap(&address)
        .assign((0..args.partitions).map(|p| TopicPartition::new(topic, p)))
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .max_poll_records(args.max_poll_records)
        .max_prefetch_bytes(256 << 20)
        .build()
        .await?;
    let cpu_before = super::cpu::process_cpu();
    let start = Instant::now();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let bar = indicatif::ProgressBar::new(args.records);
    while records < args.records {
        let polled = consumer.poll(Duration::from_secs(5)).await?;
        bar.inc(polled.len() as u64);
        for r in polled {
            records += 1;
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {records} of {} records read in 600 s", args.records).into());
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = super::cpu::per_million(
        super::cpu::cpu_seconds(cpu_before, super::cpu::process_cpu()),
        records as f64,
    );
    bar.finish_and_clear();
    consumer.close().await?;
    reader.shutdown().await?;
    let rps = records as f64 / elapsed;
    let mbps = bytes as f64 / elapsed / 1e6;
    eprintln!(
        "read {records} records in {elapsed:.2} s: {rps:.0} records/s, {mbps:.1} MB/s of values; {cpu:.2} CPU s per million records (process user+sys, agent and client together)"
    );
    println!(
        r#"{{"bench":"consume","records":{records},"record_size":{},"partitions":{},"compression":"{}","seconds":{elapsed:.3},"records_per_sec":{rps:.0},"mb_per_sec":{mbps:.1},"cpu_s_per_million":{cpu:.3}}}"#,
        args.record_size, args.partitions, args.compression
    );
    Ok(())
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub async fn e2e(args: E2eArgs) -> Result<(), BoxError> {
    let tmp = tempfile::tempdir()?;
    let topic = "bench-e2e";
    let agent = agent(tmp.path(), Duration::from_millis(args.linger_ms), 1 << 30).await?;
    let address = agent.local_addr().to_string();
    Admin::connect(&address)
        .await?
        .create_topic(topic, args.partitions, None, HashMap::new())
        .await?;
    let consumer = Consumer::builder()
        .bootstrap(&address)
        .group_id("bench-e2e")
        .subscribe([topic])
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(args.fetch_max_wait_ms))
        .max_poll_records(10_000)
        .build()
        .await?;
    let producer = Producer::builder()
        .bootstrap(&address)
        .batch_size(1000)
        .batch_timeout(Duration::from_millis(args.batch_timeout_ms))
        .build()
        .await?;
    eprintln!(
        "e2e: {} records/s for {} s, {} partitions, {} B values; agent flush {} ms, producer batch_timeout {} ms, consumer fetch_max_wait {} ms",
        args.rate,
        args.duration,
        args.partitions,
        args.record_size,
        args.linger_ms,
        args.batch_timeout_ms,
        args.fetch_max_wait_ms
    );
    let total = (args.rate as f64 * args.duration) as u64;
    let size = args.record_size.max(16);
    let cpu_before = super::cpu::process_cpu();
    let send = tokio::spawn(async move {
        let start = Instant::now();
        let mut pending = Vec::new();
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            // The value starts with its send time in microseconds.
            let mut v = now_micros().to_be_bytes().to_vec();
            v.resize(size, b'x');
            pending.push(producer.send_record(ProducerRecord::new(topic, v)).await?);
            if pending.len() >= 10_000 {
                for d in pending.drain(..) {
                    d.await?;
                }
            }
        }
        for d in pending {
            d.await?;
        }
        producer.close().await?;
        Ok::<_, streamhouse_client::Error>(())
    });
    let mut latencies = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration + 30.0);
    while (latencies.len() as u64) < total && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(200)).await? {
            let now = now_micros();
            let v = r.value.unwrap_or_default();
            let sent = u64::from_be_bytes(v[..8].try_into()?);
            latencies.push(now.saturating_sub(sent));
        }
    }
    send.await??;
    let cpu = super::cpu::per_million(
        super::cpu::cpu_seconds(cpu_before, super::cpu::process_cpu()),
        latencies.len() as f64,
    );
    consumer.close().await?;
    agent.shutdown().await?;
    if (latencies.len() as u64) < total {
        return Err(format!("received {} of {total} records", latencies.len()).into());
    }
    latencies.sort_unstable();
    let (p50, p99, p999) = (
        quantile(&latencies, 0.5) as f64 / 1000.0,
        quantile(&latencies, 0.99) as f64 / 1000.0,
        quantile(&latencies, 0.999) as f64 / 1000.0,
    );
    eprintln!(
        "{total} records: produce → consume latency p50 {p50:.2} ms, p99 {p99:.2} ms, p999 {p999:.2} ms; {cpu:.2} CPU s per million records (process user+sys: agent, producer and consumer)"
    );
    println!(
        r#"{{"bench":"e2e","rate":{},"records":{total},"partitions":{},"record_size":{},"linger_ms":{},"batch_timeout_ms":{},"fetch_max_wait_ms":{},"p50_ms":{p50:.3},"p99_ms":{p99:.3},"p999_ms":{p999:.3},"cpu_s_per_million":{cpu:.3}}}"#,
        args.rate,
        args.partitions,
        args.record_size,
        args.linger_ms,
        args.batch_timeout_ms,
        args.fetch_max_wait_ms
    );
    Ok(())
}
