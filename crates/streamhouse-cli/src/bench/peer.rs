//! `streamhouse bench kafka` (feature kafka-bench): librdkafka against any
//! Kafka broker (a StreamHouse agent's Kafka listener, or a peer such as
//! tansu), so both are driven by the same client with the same load. It
//! produces for a while, or reads a topic back from its start, and reports
//! its own CPU and that of the processes named with `--watch` (the broker,
//! the S3 server) per million records.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use super::cpu;
use super::kafka::{KafkaLoad, parse_setting, produce, read_kafka};
use crate::BoxError;

#[derive(clap::Args)]
pub struct PeerArgs {
    /// The broker's Kafka bootstrap address, HOST:PORT.
    #[arg(long)]
    bootstrap: String,
    /// Topic to produce to or read; produce creates it (with --partitions)
    /// when it does not exist.
    #[arg(long)]
    topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Bytes per record value (JSON-like, pseudo-random field values).
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// librdkafka compression.codec: none, snappy or lz4 (this build of
    /// librdkafka has neither zlib nor zstd).
    #[arg(long, default_value = "none")]
    compression: String,
    /// librdkafka enable.idempotence.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    idempotence: bool,
    /// librdkafka linger.ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Target records per second; 0 sends as fast as acknowledgements
    /// allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to produce.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Records librdkafka may hold unacknowledged.
    #[arg(long, default_value_t = 160_000)]
    window: usize,
    /// Read this many records from the start of the topic's partitions
    /// instead of producing.
    #[arg(long)]
    read: Option<u64>,
    /// A process whose CPU time to report per million records, NAME=PID
    /// (repeatable): the broker, the S3 server.
    #[arg(long, value_parser = parse_watch)]
    watch: Vec<(String, String)>,
    /// Name of the broker in the summary.
    #[arg(long, default_value = "broker")]
    label: String,
    /// A librdkafka setting over the bench's own, KEY=VALUE (repeatable).
    #[arg(long, value_parser = parse_setting)]
    kafka_config: Vec<(String, String)>,
}

/// A `--watch` value: `NAME=PID`, the name letters, digits, `_` and `-`,
/// the PID a number.
fn parse_watch(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, pid))
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok((name.to_string(), pid.to_string()))
        }
        _ => Err(format!("{s:?} is not NAME=PID")),
    }
}

/// CPU time of each watched process, read together.
fn watched(watch: &[(String, String)]) -> Vec<Option<Duration>> {
    watch.iter().map(|(_, pid)| cpu::cpu_of(pid)).collect()
}

/// `"NAME":CPU_S_PER_MILLION` for each watched process; an error when one
/// could not be read (it exited).
fn watched_json(
    watch: &[(String, String)],
    before: &[Option<Duration>],
    after: &[Option<Duration>],
    records: f64,
) -> Result<String, BoxError> {
    let mut parts = Vec::with_capacity(watch.len());
    for (((name, pid), b), a) in watch.iter().zip(before).zip(after) {
        if b.is_none() || a.is_none() {
            return Err(format!("cannot read the CPU time of {name} (pid {pid})").into());
        }
        let seconds = cpu::cpu_seconds(*b, *a);
        eprintln!(
            "{name}: {seconds:.2} CPU s, {:.3} CPU s per million records",
            cpu::per_million(seconds, records)
        );
        parts.push(format!(
            r#""{name}_cpu_s_per_million":{:.3}"#,
            cpu::per_million(seconds, records)
        ));
    }
    Ok(parts.join(","))
}

pub async fn run(args: PeerArgs) -> Result<(), BoxError> {
    let prefix = format!(
        r#""bench":"kafka","broker":"{}","librdkafka":"{}","partitions":{},"record_size":{},"compression":"{}","idempotence":{},"linger_ms":{}"#,
        args.label,
        rdkafka::util::get_rdkafka_version().1,
        args.partitions,
        args.record_size,
        args.compression,
        args.idempotence,
        args.linger_ms,
    );
    if let Some(records) = args.read {
        let before = watched(&args.watch);
        let (bootstrap, topic, partitions, extra) = (
            args.bootstrap.clone(),
            args.topic.clone(),
            args.partitions,
            args.kafka_config.clone(),
        );
        let read = tokio::task::spawn_blocking(move || {
            read_kafka(&bootstrap, &topic, partitions, records, &extra)
        })
        .await??;
        let after = watched(&args.watch);
        read.report(&format!("{} read", args.label));
        let watched = watched_json(&args.watch, &before, &after, records as f64)?;
        println!(
            r#"{{{prefix},"mode":"read","records":{records},{},"client_cpu_s_per_million":{:.3}{}{watched}}}"#,
            read.json(),
            read.cpu_per_million(),
            if watched.is_empty() { "" } else { "," },
        );
        return Ok(());
    }
    create_topic(&args).await?;
    let load = KafkaLoad {
        record_size: args.record_size,
        compression: args.compression.clone(),
        idempotence: args.idempotence,
        batch_timeout_ms: args.linger_ms,
        duration: args.duration,
        rate: args.rate,
        window: args.window.clamp(1, i32::MAX as usize),
        extra: args.kafka_config.clone(),
    };
    let before = watched(&args.watch);
    let (bootstrap, topic) = (args.bootstrap.clone(), args.topic.clone());
    let measured =
        tokio::task::spawn_blocking(move || produce(&load, &bootstrap, &topic)).await??;
    let after = watched(&args.watch);
    measured.report(&format!("{} produce", args.label));
    let watched = watched_json(&args.watch, &before, &after, measured.records)?;
    println!(
        r#"{{{prefix},"mode":"produce","target_rate":{},{},"client_cpu_s_per_million":{:.3}{}{watched}}}"#,
        args.rate,
        measured.json(),
        measured.cpu_per_million(),
        if watched.is_empty() { "" } else { "," },
    );
    Ok(())
}

/// Creates the topic with `--partitions` partitions; one that exists is
/// kept as it is.
async fn create_topic(args: &PeerArgs) -> Result<(), BoxError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .create()?;
    let partitions = i32::try_from(args.partitions).map_err(|_| "too many partitions")?;
    let topic = NewTopic::new(&args.topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let started = Instant::now();
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating topic {name}: {code}").into()),
        }
    }
    eprintln!(
        "topic {} ({} partitions) ready in {:.2} s",
        args.topic,
        args.partitions,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_values_are_name_and_numeric_pid() {
        assert_eq!(
            parse_watch("agent=123"),
            Ok(("agent".to_string(), "123".to_string()))
        );
        assert!(parse_watch("agent").is_err());
        assert!(parse_watch("=123").is_err());
        assert!(parse_watch("agent=self").is_err());
        assert!(parse_watch("a\"b=1").is_err());
        assert!(parse_watch("agent=../1").is_err());
    }

    #[test]
    fn watched_processes_report_cpu_per_million() {
        let watch = vec![("me".to_string(), std::process::id().to_string())];
        let before = watched(&watch);
        if before[0].is_none() {
            // Not Linux: no /proc to read.
            return;
        }
        let after = vec![before[0].map(|d| d + Duration::from_secs(2))];
        assert_eq!(
            watched_json(&watch, &before, &after, 4e6).unwrap(),
            r#""me_cpu_s_per_million":0.500"#
        );
        assert!(watched_json(&watch, &before, &[None], 1.0).is_err());
    }
}
