//! `streamhouse status`.

use crate::{BoxError, Output};

pub async fn status(target: &crate::target::Target, output: Output) -> Result<(), BoxError> {
    let admin = target.admin().await?;
    let mut topics = Vec::new();
    for t in admin.list_topics().await? {
        let d = admin.describe_topic(&t.name).await?;
        let records: i64 = d
            .partitions
            .iter()
            .map(|p| p.high_watermark - p.log_start_offset)
            .sum();
        let bytes: u64 = d.partitions.iter().map(|p| p.bytes).sum();
        let segments: u64 = d.partitions.iter().map(|p| p.segments).sum();
        topics.push((d, records, bytes, segments));
    }
    let mut groups = Vec::new();
    for (g, members) in admin.list_groups().await? {
        let info = admin.describe_group(&g).await?;
        let ends = crate::groups::group_ends(&admin, &info.offsets).await?;
        let lag: i64 = info
            .offsets
            .iter()
            .map(|(tp, o)| (ends.get(tp).copied().unwrap_or(*o) - o).max(0))
            .sum();
        groups.push((g, members, lag));
    }
    let agents = admin.agents_with_connections().await?;
    match output {
        Output::Json => {
            let json = serde_json::json!({
                "topics": topics.iter().map(|(d, records, bytes, segments)| serde_json::json!({
                    "name": d.name,
                    "partitions": d.partition_count,
                    "records": records,
                    "bytes": bytes,
                    "segments": segments,
                    "retention_ms": d.retention_ms,
                })).collect::<Vec<_>>(),
                "groups": groups.iter().map(|(g, members, lag)| serde_json::json!({
                    "group": g, "members": members, "lag": lag,
                })).collect::<Vec<_>>(),
                "agents": agents.iter().map(crate::agents::agent_json).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Output::Table => {
            println!(
                "{:<32} {:>10} {:>14} {:>14} {:>9}",
                "TOPIC", "PARTITIONS", "RECORDS", "BYTES", "SEGMENTS"
            );
            for (d, records, bytes, segments) in &topics {
                println!(
                    "{:<32} {:>10} {:>14} {:>14} {:>9}",
                    d.name, d.partition_count, records, bytes, segments
                );
            }
            println!();
            println!("{:<32} {:>8} {:>14}", "GROUP", "MEMBERS", "LAG");
            for (g, members, lag) in &groups {
                println!("{g:<32} {members:>8} {lag:>14}");
            }
            println!();
            println!(
                "{} live agent(s): {}",
                agents.len(),
                agents
                    .iter()
                    .map(|a| a.address.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!(
                "{:<28} {:<24} {:>6} {:>6}",
                "AGENT", "ADDRESS", "GRPC", "KAFKA"
            );
            for a in &agents {
                let (grpc, kafka) = crate::agents::connection_cells(a.connections);
                println!("{:<28} {:<24} {grpc:>6} {kafka:>6}", a.agent_id, a.address);
            }
        }
    }
    Ok(())
}
