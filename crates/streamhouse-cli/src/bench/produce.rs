//! `streamhouse bench produce`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use streamhouse_agent::{Agent, AgentConfig};
use streamhouse_client::{Admin, Compression, DeliveryFuture, Producer, ProducerRecord};

/// Records sent back to back per clock reading.
pub(super) const GROUP: u64 = 16;

use super::{cpu, quantile, value};
use crate::BoxError;

#[derive(clap::Args)]
pub struct Args {
    /// Agent to produce to. Default: start an agent in this process with
    /// the embedded defaults in a temporary directory.
    #[arg(long)]
    pub(super) agent: Option<String>,
    /// Flush linger of the in-process agent, in milliseconds.
    #[arg(long, default_value_t = 0, conflicts_with = "agent")]
    pub(super) linger_ms: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    pub(super) record_size: usize,
    /// Partitions of the topic created for the run.
    #[arg(long, default_value_t = 16)]
    pub(super) partitions: u32,
    /// Tasks sending records.
    #[arg(long, default_value_t = 8)]
    pub(super) concurrency: usize,
    /// Producer compression.
    #[arg(long, default_value_t = Compression::Lz4)]
    pub(super) compression: Compression,
    /// Target records per second over all tasks; 0 sends as fast as
    /// acknowledgements allow.
    #[arg(long, default_value_t = 0)]
    pub(super) rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub(super) duration: f64,
    /// Producer batch_size (records per batch).
    #[arg(long, default_value_t = 1000)]
    pub(super) batch_size: usize,
    /// Producer batch_timeout, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub(super) batch_timeout_ms: u64,
    /// Records each task keeps unacknowledged at most.
    #[arg(long, default_value_t = 20_000)]
    pub(super) window: usize,
    /// Also run with transactional producers committing every this many
    /// milliseconds, and report both runs.
    #[arg(long, num_args = 0..=1, default_missing_value = "100")]
    pub(super) transactional: Option<u64>,
    /// Producer idempotence.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(super) idempotence: bool,
    /// NOT DURABLE: the in-process agent skips fsync of SQLite commits and
    /// file:// objects, to measure what durability costs.
    #[arg(long, conflicts_with = "agent")]
    pub(super) unsafe_no_fsync: bool,
    /// Also run the same load through the in-process agent's Kafka
    /// listener with librdkafka, interleaved with the native runs, then
    /// read records back with both clients, and report the Kafka/native
    /// ratios.
    #[cfg(feature = "kafka-bench")]
    #[arg(long, conflicts_with_all = ["agent", "transactional"])]
    pub(super) kafka: bool,
    /// With --kafka: rounds of (native, Kafka) runs.
    #[cfg(feature = "kafka-bench")]
    #[arg(long, default_value_t = 2, requires = "kafka")]
    pub(super) rounds: u32,
    /// With --kafka: records each consumer run reads back (at most what
    /// the produce runs wrote).
    #[cfg(feature = "kafka-bench")]
    #[arg(long, default_value_t = 1_000_000, requires = "kafka")]
    pub(super) read_records: u64,
    /// With --kafka: a librdkafka setting for its producer and consumer,
    /// KEY=VALUE, over the bench's own (repeatable).
    #[cfg(feature = "kafka-bench")]
    #[arg(long, value_parser = super::kafka::parse_setting, requires = "kafka")]
    pub(super) kafka_config: Vec<(String, String)>,
}

pub async fn run(args: Args) -> Result<(), BoxError> {
    let tmp = tempfile::tempdir()?;
    let (address, agent) = match &args.agent {
        Some(a) => (a.clone(), None),
        None => {
            let mut config = AgentConfig {
                listen: "127.0.0.1:0".parse()?,
                kafka_listen: kafka_listen(&args),
                metadata_url: format!("sqlite://{}", tmp.path().join("metadata.db").display()),
                storage_url: format!("file://{}", tmp.path().join("objects").display()),
                unsafe_no_fsync: args.unsafe_no_fsync,
                ..AgentConfig::default()
            };
            config.pipeline.linger = Duration::from_millis(args.linger_ms);
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
    #[cfg(feature = "kafka-bench")]
    if args.kafka {
        let agent = agent.expect("--kafka conflicts with --agent");
        let kafka = agent
            .kafka_addr()
            .expect("the Kafka listener was asked for");
        let compared = super::kafka::compare(&args, &address, kafka, &topic).await;
        agent.shutdown().await?;
        return compared;
    }
    let objects = agent.as_ref().map(|_| tmp.path().join("objects"));
    let before = objects.as_deref().map(count_objects);
    let mut plain = measure(&args, &address, &topic, None).await?;
    if let (Some(dir), Some(before)) = (objects.as_deref(), before) {
        plain.objects_written = Some(count_objects(dir).saturating_sub(before));
    }
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

/// The in-process agent's Kafka listener address: an ephemeral port with
/// `--kafka`, none otherwise.
#[cfg(feature = "kafka-bench")]
fn kafka_listen(args: &Args) -> Option<std::net::SocketAddr> {
    args.kafka.then(|| ([127, 0, 0, 1], 0).into())
}

/// The in-process agent has no Kafka listener without the kafka-bench
/// feature.
#[cfg(not(feature = "kafka-bench"))]
fn kafka_listen(_: &Args) -> Option<std::net::SocketAddr> {
    None
}

/// What one measured run gave.
pub(super) struct Measured {
    pub(super) records: f64,
    pub(super) seconds: f64,
    pub(super) records_per_sec: f64,
    pub(super) mb_per_sec: f64,
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) p999: f64,
    /// User + system CPU seconds of the whole process (agent and client)
    /// during the run.
    pub(super) cpu_seconds: f64,
    /// Objects the in-process agent wrote during the run (PUTs), when known.
    pub(super) objects_written: Option<u64>,
}

impl Measured {
    /// Derives the rates from `records` acknowledged in `seconds` with
    /// `latencies` (sorted, microseconds) and `cpu_seconds` used.
    pub(super) fn new(
        records: f64,
        seconds: f64,
        record_size: usize,
        latencies: &[u64],
        cpu_seconds: f64,
    ) -> Self {
        Measured {
            records,
            seconds,
            records_per_sec: records / seconds,
            mb_per_sec: records * record_size as f64 / seconds / 1e6,
            p50: quantile(latencies, 0.5) as f64 / 1000.0,
            p99: quantile(latencies, 0.99) as f64 / 1000.0,
            p999: quantile(latencies, 0.999) as f64 / 1000.0,
            cpu_seconds,
            objects_written: None,
        }
    }

    /// Process CPU seconds per million records acknowledged.
    pub(super) fn cpu_per_million(&self) -> f64 {
        cpu::per_million(self.cpu_seconds, self.records)
    }

    /// Objects written per second, when known.
    pub(super) fn objects_per_sec(&self) -> Option<f64> {
        self.objects_written.map(|n| n as f64 / self.seconds)
    }

    pub(super) fn report(&self, what: &str) {
        eprintln!(
            "{what}: {:.0} records in {:.1} s: {:.0} records/s, {:.1} MB/s of values; ack latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms; {:.2} CPU s per million records (process user+sys, agent and client together){}",
            self.records,
            self.seconds,
            self.records_per_sec,
            self.mb_per_sec,
            self.p50,
            self.p99,
            self.p999,
            self.cpu_per_million(),
            match self.objects_per_sec() {
                Some(n) => format!("; {n:.0} objects written per second"),
                None => String::new(),
            }
        );
    }

    pub(super) fn json(&self) -> String {
        format!(
            r#""records":{:.0},"seconds":{:.2},"records_per_sec":{:.0},"mb_per_sec":{:.1},"ack_p50_ms":{:.3},"ack_p99_ms":{:.3},"ack_p999_ms":{:.3},"cpu_s_per_million":{:.3}{}"#,
            self.records,
            self.seconds,
            self.records_per_sec,
            self.mb_per_sec,
            self.p50,
            self.p99,
            self.p999,
            self.cpu_per_million(),
            match self.objects_per_sec() {
                Some(n) => format!(r#","objects_per_sec":{n:.1}"#),
                None => String::new(),
            }
        )
    }
}

/// Files under `dir`, recursively (0 when it does not exist yet).
fn count_objects(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_objects(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

/// Several runs taken as one: their records, seconds and CPU added up;
/// each latency quantile the mean of the runs' (the runs' samples are not
/// kept).
#[cfg(any(test, feature = "kafka-bench"))]
pub(super) fn combine(runs: &[Measured], record_size: usize) -> Measured {
    let records: f64 = runs.iter().map(|r| r.records).sum();
    let seconds: f64 = runs.iter().map(|r| r.seconds).sum();
    let mean = |f: fn(&Measured) -> f64| runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64;
    Measured {
        records,
        seconds,
        records_per_sec: records / seconds,
        mb_per_sec: records * record_size as f64 / seconds / 1e6,
        p50: mean(|r| r.p50),
        p99: mean(|r| r.p99),
        p999: mean(|r| r.p999),
        cpu_seconds: runs.iter().map(|r| r.cpu_seconds).sum(),
        objects_written: runs.iter().map(|r| r.objects_written).sum(),
    }
}

/// One run: `args.concurrency` tasks sending for `args.duration`, through
/// one shared producer, or (with `transactions`) a transactional producer
/// per task committing a transaction every `transactions`.
pub(super) async fn measure(
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
    let cpu_before = cpu::process_cpu();
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
    let cpu_seconds = cpu::cpu_seconds(cpu_before, cpu::process_cpu());
    bar.abort();
    if let Some(p) = shared {
        p.close().await?;
    }
    latencies.sort_unstable();
    Ok(Measured::new(
        latencies.len() as f64,
        seconds,
        args.record_size,
        &latencies,
        cpu_seconds,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_derives_rates_and_cpu_per_million() {
        let latencies: Vec<u64> = (1..=1000).collect();
        let m = Measured::new(2e6, 4.0, 100, &latencies, 3.0);
        assert_eq!(m.records_per_sec, 5e5);
        assert_eq!(m.mb_per_sec, 50.0);
        assert_eq!(m.p50, 0.501);
        assert_eq!(m.p99, 0.990);
        assert_eq!(m.cpu_per_million(), 1.5);
    }

    #[test]
    fn in_process_settings_are_refused_with_a_running_agent() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        assert!(Cli::try_parse_from(["b", "--linger-ms", "5"]).is_ok());
        assert!(Cli::try_parse_from(["b", "--agent", "127.0.0.1:1"]).is_ok());
        let err = Cli::try_parse_from(["b", "--agent", "127.0.0.1:1", "--linger-ms", "5"])
            .err()
            .expect("--linger-ms has no agent to set with --agent");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn combined_runs_add_up_and_average_quantiles() {
        let a = Measured::new(1e6, 1.0, 100, &[1000, 2000, 3000], 1.0);
        let b = Measured::new(3e6, 3.0, 100, &[3000, 4000, 5000], 5.0);
        let c = combine(&[a, b], 100);
        assert_eq!(c.records, 4e6);
        assert_eq!(c.seconds, 4.0);
        assert_eq!(c.records_per_sec, 1e6);
        assert_eq!(c.p50, 3.0);
        assert_eq!(c.cpu_seconds, 6.0);
        assert_eq!(c.cpu_per_million(), 1.5);
    }
}
