//! `streamhouse groups`.

use std::collections::HashMap;

use clap::Subcommand;
use streamhouse_client::{Admin, OffsetSpec, TopicPartition};

use crate::{BoxError, Output};

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

pub async fn groups(
    target: &crate::target::Target,
    command: GroupsCommand,
) -> Result<(), BoxError> {
    let admin = target.admin().await?;
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
            let ends = group_ends(&admin, &g.offsets).await?;
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

/// The end offset of every partition a group committed offsets for.
pub async fn group_ends(
    admin: &Admin,
    offsets: &[(TopicPartition, i64)],
) -> Result<HashMap<TopicPartition, i64>, BoxError> {
    let partitions: Vec<_> = offsets.iter().map(|(tp, _)| tp.clone()).collect();
    if partitions.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(admin
        .list_offsets(&partitions, OffsetSpec::Latest)
        .await?
        .into_iter()
        .collect())
}
