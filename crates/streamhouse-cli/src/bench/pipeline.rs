//! `streamhouse bench pipeline`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamhouse_core::{Compression, NewRecord, RecordBatch};
use streamhouse_metadata::TopicConfig;
use streamhouse_storage::{
    PipelineConfig, S3Options, WritePipeline, open_object_store, open_object_store_without_fsync,
};

use super::{quantile, value};
use crate::BoxError;

#[derive(clap::Args)]
pub struct Args {
    /// Metadata store URL. Default: SQLite in a temporary directory.
    #[arg(long)]
    metadata: Option<String>,
    /// Object store URL (file://DIR, s3://BUCKET/PREFIX). Default: a
    /// temporary local directory.
    #[arg(long)]
    storage: Option<String>,
    /// S3 endpoint (else AWS_ENDPOINT_URL), e.g. http://127.0.0.1:9000.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// S3 region (else AWS_REGION).
    #[arg(long)]
    s3_region: Option<String>,
    /// Partition counts to measure, one run each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 256])]
    partitions: Vec<u32>,
    /// Records per appended batch.
    #[arg(long, default_value_t = 1000)]
    batch_records: usize,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Batch compression.
    #[arg(long, default_value_t = Compression::None)]
    codec: Compression,
    /// Seconds per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Appending tasks.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Appends each task keeps in flight.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Pipeline flush linger, milliseconds.
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Pipeline flush size, bytes.
    #[arg(long, default_value_t = 8 << 20)]
    flush_bytes: usize,
    /// NOT DURABLE: skip fsync of SQLite commits and file:// objects, to
    /// measure what durability costs.
    #[arg(long)]
    unsafe_no_fsync: bool,
}

struct RunResult {
    partitions: u32,
    records_per_sec: f64,
    mb_per_sec: f64,
    objects_per_sec: f64,
    flushes: u64,
    objects_written: u64,
    objects_listed: u64,
    p50_ms: f64,
    p99_ms: f64,
    /// Process user + system CPU seconds per million records appended.
    cpu_s_per_million: f64,
}

pub async fn run(args: Args) -> Result<(), BoxError> {
    let tmp = tempfile::tempdir()?;
    let metadata_url = args
        .metadata
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("metadata.db").display()));
    let storage_url = args
        .storage
        .clone()
        .unwrap_or_else(|| format!("file://{}", tmp.path().join("objects").display()));
    let s3 = S3Options {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        allow_http: args.s3_endpoint.as_ref().map(|e| e.starts_with("http://")),
        ..S3Options::default()
    };
    let (metadata, store) = if args.unsafe_no_fsync {
        (
            streamhouse_metadata::open_without_fsync(&metadata_url).await?,
            open_object_store_without_fsync(&storage_url, &s3)?,
        )
    } else {
        (
            streamhouse_metadata::open(&metadata_url).await?,
            open_object_store(&storage_url, &s3)?,
        )
    };
    let batch = RecordBatch::from_records((0..args.batch_records).map(|i| {
        NewRecord::new(
            1_700_000_000_000 + i as i64,
            None,
            value(i, args.value_size),
        )
    }))
    .with_compression(args.codec)
    .encode()?;
    eprintln!(
        "metadata {}, storage {}{}; batches of {} records of {} bytes ({} bytes {}), {} producers x {} in flight, flush {} ms / {} bytes",
        streamhouse_core::names::redact_url(&metadata_url),
        streamhouse_core::names::redact_url(&storage_url),
        if args.unsafe_no_fsync {
            " (no fsync)"
        } else {
            ""
        },
        args.batch_records,
        args.value_size,
        batch.len(),
        args.codec,
        args.producers,
        args.inflight,
        args.linger_ms,
        args.flush_bytes
    );

    let mut results = Vec::new();
    for &partitions in &args.partitions {
        let topic = format!(
            "bench-pipeline-{partitions}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        );
        metadata
            .create_topic(TopicConfig {
                name: topic.clone(),
                partition_count: partitions,
                retention_ms: None,
                config: HashMap::new(),
            })
            .await?;
        let objects_before = count_objects(&store).await?;
        let pipeline = Arc::new(WritePipeline::new(
            store.clone(),
            metadata.clone(),
            PipelineConfig {
                linger: Duration::from_millis(args.linger_ms),
                flush_bytes: args.flush_bytes,
                ..PipelineConfig::default()
            },
        )?);
        let cpu_before = super::cpu::process_cpu();
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(args.seconds);
        let mut tasks = Vec::new();
        for t in 0..args.producers {
            let (pipeline, topic, batch) = (pipeline.clone(), topic.clone(), batch.clone());
            let (producers, inflight) = (args.producers, args.inflight);
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut pending = VecDeque::new();
                let mut i = t;
                while Instant::now() < deadline {
                    let partition = (i % partitions as usize) as u32;
                    i += producers;
                    let t0 = Instant::now();
                    pending
                        .push_back((t0, pipeline.submit(&topic, partition, batch.clone()).await?));
                    if pending.len() >= inflight {
                        let (t0, ack) = pending.pop_front().expect("non-empty");
                        ack.await?;
                        latencies.push(t0.elapsed().as_micros() as u64);
                    }
                }
                for (t0, ack) in pending {
                    ack.await?;
                    latencies.push(t0.elapsed().as_micros() as u64);
                }
                Ok::<_, streamhouse_storage::Error>(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await??);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let cpu_seconds = super::cpu::cpu_seconds(cpu_before, super::cpu::process_cpu());
        let stats = pipeline.stats();
        pipeline.close().await;
        latencies.sort_unstable();
        let appends = latencies.len() as f64;
        let r = RunResult {
            partitions,
            records_per_sec: appends * args.batch_records as f64 / elapsed,
            mb_per_sec: appends * batch.len() as f64 / elapsed / 1e6,
            objects_per_sec: stats.objects_written as f64 / elapsed,
            flushes: stats.flushes,
            objects_written: stats.objects_written,
            objects_listed: count_objects(&store).await? - objects_before,
            p50_ms: quantile(&latencies, 0.50) as f64 / 1000.0,
            p99_ms: quantile(&latencies, 0.99) as f64 / 1000.0,
            cpu_s_per_million: super::cpu::per_million(
                cpu_seconds,
                appends * args.batch_records as f64,
            ),
        };
        eprintln!(
            "{:>4} partitions: {:>10.0} records/s {:>7.1} MB/s {:>6.1} objects/s, {} flushes -> {} objects PUT ({} listed), append p50 {:.2} ms p99 {:.2} ms, {:.2} CPU s per million records (process user+sys)",
            r.partitions,
            r.records_per_sec,
            r.mb_per_sec,
            r.objects_per_sec,
            r.flushes,
            r.objects_written,
            r.objects_listed,
            r.p50_ms,
            r.p99_ms,
            r.cpu_s_per_million
        );
        results.push(r);
    }
    let json: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                r#"{{"partitions":{},"records_per_sec":{:.0},"mb_per_sec":{:.1},"objects_per_sec":{:.1},"flushes":{},"objects_written":{},"objects_listed":{},"append_p50_ms":{:.3},"append_p99_ms":{:.3},"cpu_s_per_million":{:.3}}}"#,
                r.partitions,
                r.records_per_sec,
                r.mb_per_sec,
                r.objects_per_sec,
                r.flushes,
                r.objects_written,
                r.objects_listed,
                r.p50_ms,
                r.p99_ms,
                r.cpu_s_per_million
            )
        })
        .collect();
    println!(
        r#"{{"bench":"pipeline","metadata":"{}","storage":"{}","batch_records":{},"value_size":{},"codec":"{}","fsync":{},"results":[{}]}}"#,
        metadata_url
            .split('?')
            .next()
            .unwrap_or_default()
            .split('@')
            .next_back()
            .unwrap_or_default(),
        storage_url,
        args.batch_records,
        args.value_size,
        args.codec,
        !args.unsafe_no_fsync,
        json.join(",")
    );
    Ok(())
}

async fn count_objects(
    store: &Arc<dyn object_store::ObjectStore>,
) -> Result<u64, object_store::Error> {
    use futures::TryStreamExt;
    store
        .list(Some(&object_store::path::Path::from("objects")))
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await
}
