//! `streamhouse topic`.

use clap::Subcommand;

use crate::{BoxError, Output, parse_key_value};

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
    /// Show a topic, the offsets of its partitions, and the client
    /// connections of each agent (counted per agent, not per topic).
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Delete a partition's records below an offset (Kafka's
    /// DeleteRecords): its log start offset moves up to the offset.
    DeleteRecords {
        name: String,
        #[arg(long, short)]
        partition: u32,
        /// The new log start offset; default: every record that is stable
        /// (up to the high watermark when no transaction is open). Never
        /// past the last stable offset.
        #[arg(long, short)]
        offset: Option<i64>,
    },
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

pub async fn topic(target: &crate::target::Target, command: TopicCommand) -> Result<(), BoxError> {
    let admin = target.admin().await?;
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
            // Connections are counted per agent: a connection may serve
            // any topic.
            for a in admin.agents_with_connections().await? {
                let (grpc, kafka) = crate::agents::connection_cells(a.connections);
                println!(
                    "clients:    grpc {grpc}, kafka {kafka} on agent {} ({}), any topic",
                    a.agent_id, a.address
                );
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
        TopicCommand::DeleteRecords {
            name,
            partition,
            offset,
        } => {
            let start = admin.delete_records(&name, partition, offset).await?;
            println!("partition {partition} of {name} now starts at offset {start}");
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
