//! `streamhouse consume`.

use std::collections::BTreeMap;
use std::time::Duration;

use streamhouse_client::{AutoOffsetReset, Consumer, ConsumerRecord, TopicPartition};

use crate::BoxError;
use crate::signals::Shutdown;

/// Print records of a topic. Without --group it reads every partition (or
/// --partition) on its own; with --group it joins that consumer group and
/// commits its progress.
#[derive(clap::Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Consumer group to join (offsets are committed under it).
    #[arg(long, short)]
    group: Option<String>,
    /// Only this partition (not with --group).
    #[arg(long, short, conflicts_with = "group")]
    partition: Option<u32>,
    /// Start at the first stored record (with --group: where the group has
    /// no committed offset).
    #[arg(long, conflicts_with_all = ["from_end", "offset", "timestamp"])]
    from_beginning: bool,
    /// Start at the end: only records written from now on (the default).
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    from_end: bool,
    /// Start at this offset in every partition read (not with --group).
    #[arg(long, conflicts_with_all = ["group", "timestamp"])]
    offset: Option<i64>,
    /// Start at the first record at or after this time, milliseconds since
    /// the epoch (not with --group).
    #[arg(long, conflicts_with = "group")]
    timestamp: Option<i64>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long, short)]
    follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Print each record's key.
    #[arg(long)]
    show_key: bool,
    /// Print each record's headers.
    #[arg(long)]
    show_headers: bool,
    /// Print each record's partition, offset and timestamp.
    #[arg(long)]
    show_offset: bool,
    /// Skip stored batches that are damaged (they fail their CRC) instead of
    /// stopping at them; their records are lost to this consumer.
    #[arg(long)]
    skip_corrupt_batches: bool,
}

/// Consumes until caught up (or `--max`, or for ever with `--follow`). On
/// SIGINT or SIGTERM it stops polling, commits what it printed (with a
/// group), leaves the group and exits 0; a second signal exits at once.
pub async fn consume(target: &crate::target::Target, args: ConsumeArgs) -> Result<(), BoxError> {
    let mut shutdown = Shutdown::install()?;
    let admin = target.admin().await?;
    let topic = admin.describe_topic(&args.topic).await?;
    let reset = if args.from_beginning {
        AutoOffsetReset::Earliest
    } else {
        AutoOffsetReset::Latest
    };
    let builder = Consumer::builder()
        .bootstrap(&target.agent)
        .security(target.security.clone())
        .agent_group(crate::group_of(target).await?)
        .auto_offset_reset(reset)
        .skip_corrupt_batches(args.skip_corrupt_batches)
        .fetch_max_wait(Duration::from_millis(200));
    let consumer = match &args.group {
        Some(group) => {
            builder
                .group_id(group.clone())
                .subscribe([args.topic.clone()])
                .build()
                .await?
        }
        None => {
            let partitions: Vec<TopicPartition> = match args.partition {
                Some(p) => vec![TopicPartition::new(&args.topic, p)],
                None => (0..topic.partition_count)
                    .map(|p| TopicPartition::new(&args.topic, p))
                    .collect(),
            };
            let consumer = builder
                .assign(partitions.clone())
                .enable_auto_commit(false)
                .build()
                .await?;
            for tp in &partitions {
                if let Some(o) = args.offset {
                    consumer.seek(tp, o)?;
                } else if let Some(ts) = args.timestamp {
                    consumer.seek_to_timestamp(tp, ts).await?;
                }
            }
            consumer
        }
    };
    let mut printed = 0u64;
    let mut idle_polls = 0;
    loop {
        let records = tokio::select! {
            polled = consumer.poll(Duration::from_millis(500)) => match polled {
                Err(streamhouse_client::Error::CorruptBatch { .. }) => {
                    let e = polled.unwrap_err();
                    consumer.close().await?;
                    return Err(format!(
                        "{e}\n(run again with --skip-corrupt-batches to skip it; its records are lost)"
                    )
                    .into());
                }
                polled => polled?,
            },
            _ = shutdown.requested() => break,
        };
        for r in &records {
            print_record(r, &args);
            printed += 1;
            if args.max.is_some_and(|m| printed >= m) {
                consumer.close().await?;
                return Ok(());
            }
        }
        if !args.follow && records.is_empty() {
            // Stop once caught up with every owned partition.
            let lag: BTreeMap<_, _> = consumer.lag().await?;
            idle_polls += 1;
            if !lag.is_empty() && lag.values().all(|&l| l == 0) || idle_polls > 20 {
                break;
            }
        } else {
            idle_polls = 0;
        }
    }
    consumer.close().await?;
    eprintln!("consumed {printed} records");
    Ok(())
}

fn print_record(r: &ConsumerRecord, args: &ConsumeArgs) {
    let text = |b: &Option<bytes::Bytes>| match b {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "null".to_string(),
    };
    let mut line = String::new();
    if args.show_offset {
        line.push_str(&format!(
            "partition={} offset={} timestamp={}\t",
            r.partition, r.offset, r.timestamp
        ));
    }
    if args.show_key {
        line.push_str(&format!("key={}\t", text(&r.key)));
    }
    if args.show_headers {
        let headers: Vec<String> = r
            .headers
            .iter()
            .map(|h| format!("{}={}", h.key, text(&h.value)))
            .collect();
        line.push_str(&format!("headers=[{}]\t", headers.join(",")));
    }
    line.push_str(&text(&r.value));
    println!("{line}");
}
