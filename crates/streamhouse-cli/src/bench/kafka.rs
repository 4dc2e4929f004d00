//! `streamhouse bench produce --kafka` (feature kafka-bench): the same
//! produce load through the agent's native gRPC path (the Producer) and
//! through its Kafka listener (librdkafka), interleaved round by round in
//! one process against one agent, then the written records read back with
//! the native Consumer and with a librdkafka consumer (`assign`, no group).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message as _};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use streamhouse_client::{AutoOffsetReset, Consumer, TopicPartition};

use super::produce::{Args, GROUP, Measured, combine, measure};
use super::{cpu, value};
use crate::BoxError;

/// librdkafka's batch.num.messages. Its idempotent producer sends each
/// partition's batch as a ProduceRequest of its own, at most 5 in flight
/// per connection, so its throughput is bounded by 5 batches per commit
/// round trip: batches of the native run's 1,000 records cap it near
/// 300k records/s here.
const KAFKA_BATCH_RECORDS: usize = 10_000;

/// Longest a read run may take before the bench gives up.
const READ_LIMIT: Duration = Duration::from_secs(600);

/// Runs `args.rounds` rounds of (native produce, Kafka produce) into
/// `topic`, then as many rounds of (native read, Kafka read), and prints
/// each run, the totals, the Kafka/native ratios and a JSON summary line.
pub(super) async fn compare(
    args: &Args,
    address: &str,
    kafka: SocketAddr,
    topic: &str,
) -> Result<(), BoxError> {
    eprintln!(
        "Kafka listener {kafka}; librdkafka {} (batch.num.messages {KAFKA_BATCH_RECORDS}, linger.ms {}, acks all); {} rounds of (native, Kafka); agent and client run in this one process, so CPU figures cover both",
        rdkafka::util::get_rdkafka_version().1,
        args.batch_timeout_ms,
        args.rounds
    );
    let load = KafkaLoad::of(args);
    let mut native = Vec::new();
    let mut rdkafka = Vec::new();
    for round in 1..=args.rounds {
        let n = measure(args, address, topic, None).await?;
        n.report(&format!("round {round} native"));
        native.push(n);
        let (load, bootstrap, topic) = (load.clone(), kafka.to_string(), topic.to_string());
        let k = tokio::task::spawn_blocking(move || produce(&load, &bootstrap, &topic)).await??;
        k.report(&format!("round {round} kafka"));
        rdkafka.push(k);
    }
    let native = combine(&native, args.record_size);
    let rdkafka = combine(&rdkafka, args.record_size);
    native.report("native (all rounds; latencies are the mean of the rounds' quantiles)");
    rdkafka.report("kafka (all rounds; latencies are the mean of the rounds' quantiles)");
    let produce_ratio = rdkafka.records_per_sec / native.records_per_sec;
    eprintln!(
        "Kafka / native: throughput {produce_ratio:.2}, CPU per record {:.2}",
        rdkafka.cpu_per_million() / native.cpu_per_million()
    );

    let to_read = args
        .read_records
        .min((native.records + rdkafka.records) as u64);
    let mut native_reads = Vec::new();
    let mut kafka_reads = Vec::new();
    for round in 1..=args.rounds {
        let n = read_native(address, topic, args.partitions, to_read).await?;
        n.report(&format!("round {round} native read"));
        native_reads.push(n);
        let (bootstrap, topic, partitions, extra) = (
            kafka.to_string(),
            topic.to_string(),
            args.partitions,
            args.kafka_config.clone(),
        );
        let k = tokio::task::spawn_blocking(move || {
            read_kafka(&bootstrap, &topic, partitions, to_read, &extra)
        })
        .await??;
        k.report(&format!("round {round} kafka read"));
        kafka_reads.push(k);
    }
    let native_read = Read::sum(&native_reads);
    let kafka_read = Read::sum(&kafka_reads);
    let read_ratio = kafka_read.records_per_sec() / native_read.records_per_sec();
    eprintln!(
        "reads: native {:.0} records/s ({:.2} CPU s/M), kafka {:.0} records/s ({:.2} CPU s/M); Kafka / native throughput {read_ratio:.2}",
        native_read.records_per_sec(),
        native_read.cpu_per_million(),
        kafka_read.records_per_sec(),
        kafka_read.cpu_per_million(),
    );
    println!(
        r#"{{"bench":"produce-kafka","librdkafka":"{}","rounds":{},"partitions":{},"record_size":{},"compression":"{}","batch_size":{},"batch_timeout_ms":{},"kafka_batch_records":{KAFKA_BATCH_RECORDS},"idempotence":{},"fsync":{},"target_rate":{},"cpu":"process user+sys, agent and client in one process","native":{{{}}},"kafka":{{{}}},"kafka_ratio":{produce_ratio:.3},"read":{{"records":{to_read},"native":{{{}}},"kafka":{{{}}},"kafka_ratio":{read_ratio:.3}}}}}"#,
        rdkafka::util::get_rdkafka_version().1,
        args.rounds,
        args.partitions,
        args.record_size,
        args.compression,
        args.batch_size,
        args.batch_timeout_ms,
        args.idempotence,
        !args.unsafe_no_fsync,
        args.rate,
        native.json(),
        rdkafka.json(),
        native_read.json(),
        kafka_read.json(),
    );
    Ok(())
}

/// A `--kafka-config` setting: `KEY=VALUE`.
pub(super) fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The produce settings the librdkafka run shares with the native one.
#[derive(Clone)]
pub(super) struct KafkaLoad {
    pub(super) record_size: usize,
    pub(super) compression: String,
    pub(super) idempotence: bool,
    pub(super) batch_timeout_ms: u64,
    pub(super) duration: f64,
    pub(super) rate: u64,
    /// Records librdkafka may hold unacknowledged (the native run's
    /// window per task times its tasks).
    pub(super) window: usize,
    /// `--kafka-config` settings, applied after the bench's own.
    pub(super) extra: Vec<(String, String)>,
}

impl KafkaLoad {
    fn of(args: &Args) -> Self {
        KafkaLoad {
            record_size: args.record_size,
            compression: args.compression.to_string(),
            idempotence: args.idempotence,
            batch_timeout_ms: args.batch_timeout_ms,
            duration: args.duration,
            rate: args.rate,
            window: (args.window * args.concurrency).clamp(1, i32::MAX as usize),
            extra: args.kafka_config.clone(),
        }
    }
}

/// A configuration from `base` and the `--kafka-config` settings `extra`,
/// which win over what the bench sets on it. librdkafka logs warnings and
/// errors, and debug lines too when `extra` sets `debug`.
fn with_extra(mut base: ClientConfig, extra: &[(String, String)]) -> ExtraConfig {
    base.set_log_level(if extra.iter().any(|(k, _)| k == "debug") {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    });
    for (k, v) in extra {
        base.set(k, v);
    }
    ExtraConfig {
        config: base,
        extra: extra.to_vec(),
    }
}

/// A librdkafka configuration whose `--kafka-config` settings win over
/// what the bench sets.
struct ExtraConfig {
    config: ClientConfig,
    extra: Vec<(String, String)>,
}

impl ExtraConfig {
    fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        if !self.extra.iter().any(|(k, _)| k == key) {
            self.config.set(key, value);
        }
        self
    }

    fn create_with_context<C, T>(&self, context: C) -> Result<T, KafkaError>
    where
        C: ClientContext,
        T: rdkafka::config::FromClientConfigAndContext<C>,
    {
        self.config.create_with_context(context)
    }
}

/// Notes each acknowledgement's latency: the delivery opaque is the send
/// time in microseconds since `start`.
struct Acks {
    start: Instant,
    latencies: Mutex<Vec<u64>>,
    failed: AtomicU64,
    first_error: Mutex<Option<KafkaError>>,
}

impl ClientContext for Acks {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(%error, "librdkafka: {reason}");
    }
}

/// The librdkafka consumer's context: its logs go to `tracing`.
struct Logged;

impl ClientContext for Logged {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(%error, "librdkafka: {reason}");
    }
}

impl rdkafka::consumer::ConsumerContext for Logged {}

/// Emits a librdkafka log line through `tracing` (target
/// `streamhouse::bench::kafka`), at the matching level.
fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(facility, "librdkafka: {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {message}"),
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_micros: usize) {
        match result {
            Ok(_) => {
                let now = self.start.elapsed().as_micros() as u64;
                self.latencies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(now.saturating_sub(sent_micros as u64));
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert_with(|| e.clone());
            }
        }
    }
}

/// One librdkafka produce run: one producer sending for `load.duration`
/// (librdkafka's own threads batch and send), then waiting for every
/// acknowledgement.
pub(super) fn produce(
    load: &KafkaLoad,
    bootstrap: &str,
    topic: &str,
) -> Result<Measured, BoxError> {
    let start = Instant::now();
    let acks = Acks {
        start,
        latencies: Mutex::new(Vec::new()),
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let producer: ThreadedProducer<Acks> = with_extra(ClientConfig::new(), &load.extra)
        .set("bootstrap.servers", bootstrap)
        .set("compression.codec", &load.compression)
        .set("enable.idempotence", load.idempotence.to_string())
        .set("acks", "all")
        .set("linger.ms", load.batch_timeout_ms.to_string())
        .set("batch.num.messages", KAFKA_BATCH_RECORDS.to_string())
        .set("queue.buffering.max.messages", load.window.to_string())
        .set("queue.buffering.max.kbytes", (256 << 10).to_string())
        .create_with_context(acks)?;
    // Connected and holding the topic's metadata before the clock starts,
    // as the native Producer is once built.
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let values: Vec<bytes::Bytes> = (0..1024).map(|i| value(i, load.record_size)).collect();
    let cpu_before = cpu::process_cpu();
    let run_start = Instant::now();
    let deadline = run_start + Duration::from_secs_f64(load.duration);
    let mut sent = 0u64;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if load.rate > 0 {
            // Sleeps only when a millisecond or more ahead, as tokio's timer
            // (the native run's) does; a sleep per group would cost a system
            // call per 16 records.
            let due = run_start + Duration::from_secs_f64(sent as f64 / load.rate as f64);
            if due >= now + Duration::from_millis(1) {
                std::thread::sleep(due - now);
            }
        }
        // One clock reading per group of records sent back to back, as in
        // the native run.
        let sent_micros = start.elapsed().as_micros() as usize;
        for _ in 0..GROUP {
            let v = &values[sent as usize % values.len()];
            let mut record =
                BaseRecord::<(), [u8], usize>::with_opaque_to(topic, sent_micros).payload(&v[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            sent += 1;
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let seconds = run_start.elapsed().as_secs_f64();
    let cpu_seconds = cpu::cpu_seconds(cpu_before, cpu::process_cpu());
    let acks = producer.context();
    if let Some(e) = acks
        .first_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        let failed = acks.failed.load(Ordering::Relaxed);
        return Err(format!("{failed} of {sent} Kafka deliveries failed, the first: {e}").into());
    }
    let mut latencies = std::mem::take(
        &mut *acks
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    latencies.sort_unstable();
    Ok(Measured::new(
        latencies.len() as f64,
        seconds,
        load.record_size,
        &latencies,
        cpu_seconds,
    ))
}

/// What one read run gave.
pub(super) struct Read {
    records: u64,
    bytes: u64,
    seconds: f64,
    cpu_seconds: f64,
}

impl Read {
    fn sum(runs: &[Read]) -> Read {
        Read {
            records: runs.iter().map(|r| r.records).sum(),
            bytes: runs.iter().map(|r| r.bytes).sum(),
            seconds: runs.iter().map(|r| r.seconds).sum(),
            cpu_seconds: runs.iter().map(|r| r.cpu_seconds).sum(),
        }
    }

    pub(super) fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.seconds
    }

    pub(super) fn cpu_per_million(&self) -> f64 {
        cpu::per_million(self.cpu_seconds, self.records as f64)
    }

    pub(super) fn report(&self, what: &str) {
        eprintln!(
            "{what}: {} records in {:.2} s: {:.0} records/s, {:.1} MB/s of values; {:.2} CPU s per million records",
            self.records,
            self.seconds,
            self.records_per_sec(),
            self.bytes as f64 / self.seconds / 1e6,
            self.cpu_per_million()
        );
    }

    pub(super) fn json(&self) -> String {
        format!(
            r#""seconds":{:.3},"records_per_sec":{:.0},"mb_per_sec":{:.1},"cpu_s_per_million":{:.3}"#,
            self.seconds,
            self.records_per_sec(),
            self.bytes as f64 / self.seconds / 1e6,
            self.cpu_per_million()
        )
    }
}

/// Reads `records` records of `topic` from the start of its partitions
/// with the native Consumer.
async fn read_native(
    address: &str,
    topic: &str,
    partitions: u32,
    records: u64,
) -> Result<Read, BoxError> {
    // Timed from before the consumer exists: it starts fetching as it is
    // built.
    let cpu_before = cpu::process_cpu();
    let start = Instant::now();
    let consumer = Consumer::builder()
        .bootstrap(address)
        .assign((0..partitions).map(|p| TopicPartition::new(topic, p)))
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .max_poll_records(10_000)
        .max_prefetch_bytes(256 << 20)
        .build()
        .await?;
    let (mut read, mut bytes) = (0u64, 0u64);
    while read < records {
        for r in consumer.poll(Duration::from_secs(5)).await? {
            read += 1;
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        if start.elapsed() > READ_LIMIT {
            return Err(format!("native read: only {read} of {records} records in 600 s").into());
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = cpu::cpu_seconds(cpu_before, cpu::process_cpu());
    consumer.close().await?;
    Ok(Read {
        records: read,
        bytes,
        seconds,
        cpu_seconds,
    })
}

/// Reads `records` records of `topic` from the start of its partitions
/// with a librdkafka consumer assigned every partition. librdkafka needs a
/// group.id to `assign`; the consumer neither joins the group nor commits.
pub(super) fn read_kafka(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    records: u64,
    extra: &[(String, String)],
) -> Result<Read, BoxError> {
    // Timed from before the consumer exists, as the native read is.
    let cpu_before = cpu::process_cpu();
    let start = Instant::now();
    let consumer: BaseConsumer<Logged> = with_extra(ClientConfig::new(), extra)
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-read-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // librdkafka stops fetching for fetch.queue.backoff.ms (1 s by
        // default) whenever its queue holds queued.min.messages; a reader
        // at full speed drains it far sooner.
        .set("fetch.queue.backoff.ms", "10")
        .create_with_context(Logged)?;
    // librdkafka queries a partition's start offset from its leader; a
    // partition assigned before the leader is known retries that query
    // only after 500 ms. Learning the topic's leaders first (one Metadata
    // round trip, timed) keeps that client-side wait out of the read.
    consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let (mut read, mut bytes) = (0u64, 0u64);
    while read < records {
        // librdkafka hands out one message per poll; the clock is read
        // after an empty poll or every 10,000 records, not after each.
        let check = match consumer.poll(Duration::from_secs(1)) {
            Some(m) => {
                let m = m?;
                read += 1;
                bytes += m.payload().map_or(0, |v| v.len() as u64);
                read.is_multiple_of(10_000)
            }
            None => true,
        };
        if check && start.elapsed() > READ_LIMIT {
            return Err(format!("Kafka read: only {read} of {records} records in 600 s").into());
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = cpu::cpu_seconds(cpu_before, cpu::process_cpu());
    Ok(Read {
        records: read,
        bytes,
        seconds,
        cpu_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_key_value() {
        assert_eq!(
            parse_setting("linger.ms=20"),
            Ok(("linger.ms".to_string(), "20".to_string()))
        );
        assert_eq!(
            parse_setting("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert!(parse_setting("linger.ms").is_err());
        assert!(parse_setting("=1").is_err());
    }

    #[test]
    fn given_settings_win_over_the_bench_ones() {
        let extra = [("linger.ms".to_string(), "20".to_string())];
        let mut c = with_extra(ClientConfig::new(), &extra);
        c.set("linger.ms", "5").set("acks", "all");
        assert_eq!(c.config.get("linger.ms"), Some("20"));
        assert_eq!(c.config.get("acks"), Some("all"));
    }
}
