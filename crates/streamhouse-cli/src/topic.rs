//! `streamhouse topic` and `streamhouse produce`.

use std::collections::HashMap;
use std::io::BufRead;

use clap::Subcommand;
use streamhouse_client::{Admin, Producer, ProducerRecord};

use crate::{BoxError, Output};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long, short, default_value_t = 1)]
        partitions: u32,
        /// Delete records older than this many milliseconds [default: keep forever].
        #[arg(long)]
        retention_ms: Option<i64>,
        /// Topic setting KEY=VALUE (retention.bytes, cleanup.policy,
        /// delete.retention.ms); repeatable.
        #[arg(long = "config", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
    },
    /// List topics.
    List {
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show a topic and the offsets of its partitions.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Add partitions, change retention or config keys.
    Alter {
        name: String,
        /// New (larger) partition count.
        #[arg(long, short)]
        partitions: Option<u32>,
        /// Delete records older than this many milliseconds.
        #[arg(long, conflicts_with = "retention_forever")]
        retention_ms: Option<i64>,
        /// Keep records forever.
        #[arg(long)]
        retention_forever: bool,
        /// Set a config key KEY=VALUE; repeatable.
        #[arg(long = "config", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// Remove a config key; repeatable.
        #[arg(long = "delete-config")]
        delete_config: Vec<String>,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

pub async fn topic(agent: &str, command: TopicCommand) -> Result<(), BoxError> {
    let admin = Admin::connect(agent).await?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            retention_ms,
            config,
        } => {
            let t = admin
                .create_topic(
                    &name,
                    partitions,
                    retention_ms,
                    config.into_iter().collect(),
                )
                .await?;
            println!(
                "created topic {} with {} partitions",
                t.name, t.partition_count
            );
        }
        TopicCommand::List {
            output: Output::Json,
        } => {
            let topics: Vec<_> = admin
                .list_topics()
                .await?
                .into_iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.name,
                        "partitions": t.partition_count,
                        "retention_ms": t.retention_ms,
                        "config": t.config,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&topics)?);
        }
        TopicCommand::List {
            output: Output::Table,
        } => {
            let topics = admin.list_topics().await?;
            println!(
                "{:<40} {:>10} {:>14}",
                "TOPIC", "PARTITIONS", "RETENTION_MS"
            );
            for t in topics {
                let retention = t.retention_ms.map_or("-".to_string(), |r| r.to_string());
                println!("{:<40} {:>10} {:>14}", t.name, t.partition_count, retention);
            }
        }
        TopicCommand::Describe { name } => {
            let t = admin.describe_topic(&name).await?;
            println!("topic:      {}", t.name);
            println!("id:         {}", t.topic_id);
            println!("partitions: {}", t.partition_count);
            println!(
                "retention:  {}",
                t.retention_ms
                    .map_or("forever".to_string(), |r| format!("{r} ms"))
            );
            let mut config: Vec<_> = t.config.iter().collect();
            config.sort();
            for (k, v) in config {
                println!("config:     {k}={v}");
            }
            println!(
                "{:>9} {:>16} {:>16} {:>16} {:>14} {:>9}",
                "PARTITION", "LOG_START", "HIGH_WATERMARK", "LAST_STABLE", "BYTES", "SEGMENTS"
            );
            for p in &t.partitions {
                println!(
                    "{:>9} {:>16} {:>16} {:>16} {:>14} {:>9}",
                    p.partition,
                    p.log_start_offset,
                    p.high_watermark,
                    p.last_stable_offset,
                    p.bytes,
                    p.segments
                );
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
        TopicCommand::Alter {
            name,
            partitions,
            retention_ms,
            retention_forever,
            config,
            delete_config,
        } => {
            let retention = if retention_forever {
                Some(None)
            } else {
                retention_ms.map(Some)
            };
            let t = admin
                .alter_topic(
                    &name,
                    partitions,
                    retention,
                    config.into_iter().collect(),
                    delete_config,
                )
                .await?;
            println!(
                "altered topic {}: {} partitions, retention {}",
                t.name,
                t.partition_count,
                t.retention_ms
                    .map_or("forever".to_string(), |r| format!("{r} ms"))
            );
        }
    }
    Ok(())
}

/// Produce records: each VALUE argument, or else each line of standard input.
#[derive(clap::Args)]
pub struct ProduceArgs {
    topic: String,
    /// Record values [default: one record per line of standard input].
    values: Vec<String>,
    /// Key of every record.
    #[arg(long, short)]
    key: Option<String>,
    /// Split each value at the first SEPARATOR into key and value
    /// (e.g. --key-separator : for lines like user1:hello).
    #[arg(long)]
    key_separator: Option<String>,
    /// Partition for every record [default: by key, or sticky when keyless].
    #[arg(long, short)]
    partition: Option<u32>,
    /// Header KEY=VALUE on every record; repeatable.
    #[arg(long = "header", value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    /// Print partition and offset of every record.
    #[arg(long, short)]
    verbose: bool,
    /// Read values from this file, one per line (with a progress bar).
    #[arg(long, short, conflicts_with = "values")]
    file: Option<std::path::PathBuf>,
}

pub async fn produce(agent: &str, args: ProduceArgs) -> Result<(), BoxError> {
    let producer = Producer::builder()
        .bootstrap(agent)
        .agent_group(crate::group_of(agent).await?)
        .batch_timeout(std::time::Duration::from_millis(5))
        .batch_size(1000)
        .build()
        .await?;
    let mut progress = None;
    let lines: Box<dyn Iterator<Item = std::io::Result<String>>> = if let Some(path) = &args.file {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let bar = indicatif::ProgressBar::new(file.metadata()?.len());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {per_sec} eta {eta}",
            )
            .expect("a valid template"),
        );
        let reader = bar.wrap_read(file);
        progress = Some(bar);
        Box::new(std::io::BufReader::new(reader).lines())
    } else if args.values.is_empty() {
        Box::new(std::io::stdin().lock().lines())
    } else {
        Box::new(args.values.clone().into_iter().map(Ok))
    };
    let mut pending = Vec::new();
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for line in lines {
        let line = line?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (args.key.clone(), line),
            },
            None => (args.key.clone(), line),
        };
        let mut record = ProducerRecord::new(&args.topic, value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        for (k, v) in &args.headers {
            record = record.header(k.clone(), v.clone());
        }
        pending.push(producer.send_record(record).await?);
        if pending.len() >= 10_000 {
            report(std::mem::take(&mut pending), args.verbose, &mut counts).await?;
        }
    }
    report(pending, args.verbose, &mut counts).await?;
    producer.close().await?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let total: u64 = counts.values().sum();
    let mut parts: Vec<_> = counts.into_iter().collect();
    parts.sort();
    let spread: Vec<String> = parts.iter().map(|(p, n)| format!("{p}:{n}")).collect();
    eprintln!(
        "produced {total} records to {} (partition:records {})",
        args.topic,
        spread.join(" ")
    );
    Ok(())
}

async fn report(
    pending: Vec<streamhouse_client::DeliveryFuture>,
    verbose: bool,
    counts: &mut HashMap<u32, u64>,
) -> Result<(), BoxError> {
    for d in pending {
        let r = d.await?;
        *counts.entry(r.partition).or_default() += 1;
        if verbose {
            println!("partition {} offset {}", r.partition, r.offset);
        }
    }
    Ok(())
}
