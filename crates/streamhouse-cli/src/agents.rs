//! `streamhouse agents`.

use clap::Subcommand;
use streamhouse_client::Admin;

use crate::{BoxError, Output};

#[derive(Subcommand)]
pub enum AgentsCommand {
    /// List live agents: id, group, zone, address, heartbeat age.
    List {
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

pub async fn agents(agent: &str, command: AgentsCommand) -> Result<(), BoxError> {
    let admin = Admin::connect(agent).await?;
    let AgentsCommand::List { output } = command;
    let agents = admin.agents().await?;
    match output {
        Output::Json => {
            let list: Vec<_> = agents
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "agent_id": a.agent_id,
                        "group": a.group,
                        "zone": a.zone,
                        "address": a.address,
                        "heartbeat_age_ms": a.heartbeat_age.as_millis() as u64,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Output::Table => {
            println!(
                "{:<28} {:<12} {:<10} {:<24} {:>12}",
                "AGENT", "GROUP", "ZONE", "ADDRESS", "HEARTBEAT_MS"
            );
            for a in agents {
                println!(
                    "{:<28} {:<12} {:<10} {:<24} {:>12}",
                    a.agent_id,
                    a.group,
                    a.zone.as_deref().unwrap_or("-"),
                    a.address,
                    a.heartbeat_age.as_millis()
                );
            }
        }
    }
    Ok(())
}
