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
    /// Also run with transactional producers committing every this many
    /// milliseconds, and report both runs.
    #[arg(long, num_args = 0..=1, default_missing_value = "100")]
    transactional: Option<u64>,
    /// Producer idempotence.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    idempotence: bool,
    /// NOT DURABLE: the in-process agent skips fsync of SQLite commits and
    /// file:// objects, to measure what durability costs.
    #[arg(long, conflicts_with = "agent")]
    unsafe_no_fsync: bool,
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
                unsafe_no_fsync: args.unsafe_no_fsync,
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
    let plain = measure(&args, &address, &topic, None).await?;
    plain.report("plain");
    let transactional = match args.transactional {
        Some(ms) => {
            let t = measure(&args, &address, &topic, Some(Duration::from_millis(ms))).await?;
            t.report(&format!(
                "transactional ({ms} ms transactions, one producer per task)"
            ));
            eprintln!(
                "transactional / plain throughput: {:.2}",
                t.records_per_sec / plain.records_per_sec
            );
            Some(t)
        }
        None => None,
    };
    if let Some(agent) = agent {
        agent.shutdown().await?;
    }
    println!(
        r#"{{"bench":"produce","partitions":{},"record_size":{},"concurrency":{},"compression":"{}","batch_size":{},"batch_timeout_ms":{},"idempotence":{},"fsync":{},"target_rate":{},{}{}}}"#,
        args.partitions,
        args.record_size,
        args.concurrency,
        args.compression,
        args.batch_size,
        args.batch_timeout_ms,
        args.idempotence,
        !args.unsafe_no_fsync,
        args.rate,
        plain.json(),
        match (&transactional, args.transactional) {
            (Some(t), Some(ms)) => format!(
                r#","transaction_ms":{ms},"transactional":{{{}}},"transactional_ratio":{:.3}"#,
                t.json(),
                t.records_per_sec / plain.records_per_sec
            ),
            _ => String::new(),
        }
    );
    Ok(())
}

/// What one measured run gave.
struct Measured {
    records: f64,
    seconds: f64,
    records_per_sec: f64,
    mb_per_sec: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

impl Measured {
    fn report(&self, what: &str) {
        eprintln!(
            "{what}: {:.0} records in {:.1} s: {:.0} records/s, {:.1} MB/s of values; ack latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
            self.records,
            self.seconds,
            self.records_per_sec,
            self.mb_per_sec,
            self.p50,
            self.p99,
            self.p999
        );
    }

    fn json(&self) -> String {
        format!(
            r#""records":{:.0},"seconds":{:.2},"records_per_sec":{:.0},"mb_per_sec":{:.1},"ack_p50_ms":{:.3},"ack_p99_ms":{:.3},"ack_p999_ms":{:.3}"#,
            self.records,
            self.seconds,
            self.records_per_sec,
            self.mb_per_sec,
            self.p50,
            self.p99,
            self.p999
        )
    }
}

/// One run: `args.concurrency` tasks sending for `args.duration`, through
/// one shared producer, or (with `transactions`) a transactional producer
/// per task committing a transaction every `transactions`.
async fn measure(
    args: &Args,
    address: &str,
    topic: &str,
    transactions: Option<Duration>,
) -> Result<Measured, BoxError> {
    let build = |transactional_id: Option<String>| {
        let mut b = Producer::builder()
            .bootstrap(address)
            .batch_size(args.batch_size)
            .batch_timeout(Duration::from_millis(args.batch_timeout_ms))
            .compression(args.compression)
            .idempotence(args.idempotence || transactional_id.is_some())
            .max_batch_bytes(8 << 20)
            .max_buffered_bytes(256 << 20);
        if let Some(id) = transactional_id {
            b = b.transactional_id(id);
        }
        b.build()
    };
    let shared = match transactions {
        None => Some(std::sync::Arc::new(build(None).await?)),
        Some(_) => None,
    };
    let values: Vec<bytes::Bytes> = (0..1024).map(|i| value(i, args.record_size)).collect();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let bar = super::time_bar(args.duration);
    let mut tasks = Vec::new();
    for t in 0..args.concurrency {
        let producer = match &shared {
            Some(p) => p.clone(),
            None => {
                let p = build(Some(format!("bench-{topic}-{t}"))).await?;
                p.init_transactions().await?;
                std::sync::Arc::new(p)
            }
        };
        let (topic, values) = (topic.to_string(), values.clone());
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
            let mut txn_start = None;
            loop {
                let t0 = Instant::now();
                if let Some(every) = transactions {
                    if txn_start.is_some_and(|s: Instant| t0 - s >= every || t0 >= deadline) {
                        producer.commit_transaction().await?;
                        txn_start = None;
                    }
                    if txn_start.is_none() && t0 < deadline {
                        producer.begin_transaction()?;
                        txn_start = Some(t0);
                    }
                }
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
            let latencies = collector.await.expect("collector task")?;
            if transactions.is_some() {
                producer.close().await?;
            }
            Ok::<_, streamhouse_client::Error>(latencies)
        }));
    }
    let mut latencies: Vec<u64> = Vec::new();
    for t in tasks {
        latencies.extend(t.await??.into_iter().map(u64::from));
    }
    let seconds = start.elapsed().as_secs_f64();
    bar.abort();
    if let Some(p) = shared {
        p.close().await?;
    }
    latencies.sort_unstable();
    let records = latencies.len() as f64;
    Ok(Measured {
        records,
        seconds,
        records_per_sec: records / seconds,
        mb_per_sec: records * args.record_size as f64 / seconds / 1e6,
        p50: quantile(&latencies, 0.5) as f64 / 1000.0,
        p99: quantile(&latencies, 0.99) as f64 / 1000.0,
        p999: quantile(&latencies, 0.999) as f64 / 1000.0,
    })
}
