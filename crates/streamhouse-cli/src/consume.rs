//! `streamhouse consume` and `streamhouse groups`.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Subcommand;
use streamhouse_client::{
    Admin, AutoOffsetReset, Consumer, ConsumerRecord, OffsetSpec, TopicPartition,
};

use crate::{BoxError, Output};

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
}

pub async fn consume(agent: &str, args: ConsumeArgs) -> Result<(), BoxError> {
    let admin = Admin::connect(agent).await?;
    let topic = admin.describe_topic(&args.topic).await?;
    let reset = if args.from_beginning {
        AutoOffsetReset::Earliest
    } else {
        AutoOffsetReset::Latest
    };
    let builder = Consumer::builder()
        .bootstrap(agent)
        .agent_group(crate::group_of(agent).await?)
        .auto_offset_reset(reset)
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
        let records = consumer.poll(Duration::from_millis(500)).await?;
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

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups.
    List {
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show a group's members, offsets and lag.
    Describe { group: String },
    /// Move a group's committed offsets (the group must have no live
    /// members).
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// Only these partitions (repeatable) [default: all].
        #[arg(long)]
        partition: Vec<u32>,
        #[arg(long, group = "to", required = true)]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        /// Milliseconds since the epoch.
        #[arg(long, group = "to")]
        to_timestamp: Option<i64>,
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
    },
    /// Delete a group without live members, and its offsets.
    Delete { group: String },
}

pub async fn groups(agent: &str, command: GroupsCommand) -> Result<(), BoxError> {
    let admin = Admin::connect(agent).await?;
    match command {
        GroupsCommand::List {
            output: Output::Json,
        } => {
            let groups: Vec<_> = admin
                .list_groups()
                .await?
                .into_iter()
                .map(|(g, members)| serde_json::json!({ "group": g, "members": members }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&groups)?);
        }
        GroupsCommand::List {
            output: Output::Table,
        } => {
            println!("{:<40} {:>8}", "GROUP", "MEMBERS");
            for (g, members) in admin.list_groups().await? {
                println!("{g:<40} {members:>8}");
            }
        }
        GroupsCommand::Describe { group } => {
            let g = admin.describe_group(&group).await?;
            println!("group: {} (epoch {})", g.group_id, g.group_epoch);
            println!(
                "{:<40} {:<24} {:>6}  PARTITIONS",
                "MEMBER", "CLIENT", "EPOCH"
            );
            for m in &g.members {
                let owned: Vec<String> = m.owned.iter().map(ToString::to_string).collect();
                println!(
                    "{:<40} {:<24} {:>6}  {}",
                    m.member_id,
                    m.client_id,
                    m.member_epoch,
                    owned.join(" ")
                );
            }
            let ends = crate::status::group_ends(&admin, &g.offsets).await?;
            println!(
                "{:<40} {:>9} {:>14} {:>14} {:>10}",
                "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
            );
            for (tp, offset) in &g.offsets {
                let end = ends.get(tp).copied().unwrap_or(*offset);
                println!(
                    "{:<40} {:>9} {:>14} {:>14} {:>10}",
                    tp.topic,
                    tp.partition,
                    offset,
                    end,
                    (end - offset).max(0)
                );
            }
        }
        GroupsCommand::ResetOffsets {
            group,
            topic,
            partition,
            to_earliest: _,
            to_latest,
            to_timestamp,
            to_offset,
        } => {
            let spec = if to_latest {
                OffsetSpec::Latest
            } else if let Some(t) = to_timestamp {
                OffsetSpec::Timestamp(t)
            } else if let Some(o) = to_offset {
                OffsetSpec::Offset(o)
            } else {
                OffsetSpec::Earliest
            };
            for (tp, offset) in admin
                .reset_offsets(&group, &topic, &partition, spec)
                .await?
            {
                println!("{tp} -> {offset}");
            }
        }
        GroupsCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}
