//! `streamhouse agents`.

use clap::Subcommand;
use streamhouse_client::{AgentConnections, AgentDescription};

use crate::{BoxError, Output};

#[derive(Subcommand)]
pub enum AgentsCommand {
    /// List live agents: id, group, zone, address, heartbeat age, and the
    /// gRPC and Kafka client connections open on each.
    List {
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

pub async fn agents(
    target: &crate::target::Target,
    command: AgentsCommand,
) -> Result<(), BoxError> {
    let admin = target.admin().await?;
    let AgentsCommand::List { output } = command;
    let agents = admin.agents_with_connections().await?;
    match output {
        Output::Json => {
            let list: Vec<_> = agents.iter().map(agent_json).collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Output::Table => {
            println!(
                "{:<28} {:<12} {:<10} {:<24} {:>12} {:>6} {:>6}",
                "AGENT", "GROUP", "ZONE", "ADDRESS", "HEARTBEAT_MS", "GRPC", "KAFKA"
            );
            for a in agents {
                let (grpc, kafka) = connection_cells(a.connections);
                println!(
                    "{:<28} {:<12} {:<10} {:<24} {:>12} {:>6} {:>6}",
                    a.agent_id,
                    a.group,
                    a.zone.as_deref().unwrap_or("-"),
                    a.address,
                    a.heartbeat_age.as_millis(),
                    grpc,
                    kafka
                );
            }
        }
    }
    Ok(())
}

/// An agent as JSON: its connections are `grpc_connections` and
/// `kafka_connections` (null when it did not answer).
pub fn agent_json(a: &AgentDescription) -> serde_json::Value {
    serde_json::json!({
        "agent_id": a.agent_id,
        "group": a.group,
        "zone": a.zone,
        "address": a.address,
        "heartbeat_age_ms": a.heartbeat_age.as_millis() as u64,
        "grpc_connections": a.connections.map(|c| c.grpc),
        "kafka_connections": a.connections.map(|c| c.kafka),
    })
}

/// The gRPC and Kafka connection counts as table cells (`-` when the
/// agent did not answer).
pub fn connection_cells(c: Option<AgentConnections>) -> (String, String) {
    c.map_or(("-".into(), "-".into()), |c| {
        (c.grpc.to_string(), c.kafka.to_string())
    })
}
