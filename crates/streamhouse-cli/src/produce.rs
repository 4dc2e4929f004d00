//! `streamhouse produce`.

use std::collections::HashMap;
use std::io::BufRead;

use streamhouse_client::{Producer, ProducerRecord};

use crate::{BoxError, parse_key_value};

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

pub async fn produce(target: &crate::target::Target, args: ProduceArgs) -> Result<(), BoxError> {
    let producer = Producer::builder()
        .bootstrap(&target.agent)
        .security(target.security.clone())
        .agent_group(crate::group_of(target).await?)
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
