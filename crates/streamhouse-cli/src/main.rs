//! `streamhouse`: the StreamHouse command line.

use clap::{Parser, Subcommand};

mod acl;
mod agent;
mod agents;
mod bench;
mod consume;
mod copy;
mod groups;
mod produce;
mod signals;
mod status;
mod target;
mod topic;
mod users;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The agent group of the agent at `address` (clients then use that
/// group's agents), or `default` if it is not listed.
pub async fn group_of(target: &target::Target) -> Result<String, BoxError> {
    let agents = target.admin().await?.agents().await?;
    Ok(agents
        .into_iter()
        .find(|a| a.address == target.agent)
        .map_or_else(|| "default".to_string(), |a| a.group))
}

/// Parses a repeatable KEY=VALUE argument (topic config, record headers).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// StreamHouse: event streaming on object storage.
#[derive(Parser)]
#[command(name = "streamhouse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How list commands print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// JSON.
    Json,
}

use target::AgentAddress;

#[derive(Subcommand)]
enum Command {
    /// Run an agent (the StreamHouse server).
    Agent(Box<agent::Args>),
    /// Create, list, describe and delete topics.
    Topic {
        #[command(flatten)]
        address: AgentAddress,
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// Produce records from arguments or standard input.
    Produce {
        #[command(flatten)]
        address: AgentAddress,
        #[command(flatten)]
        args: produce::ProduceArgs,
    },
    /// Print records of a topic, alone or as a consumer group member.
    Consume {
        #[command(flatten)]
        address: AgentAddress,
        #[command(flatten)]
        args: consume::ConsumeArgs,
    },
    /// Copy a topic into another exactly once (transactions).
    Copy {
        #[command(flatten)]
        address: AgentAddress,
        #[command(flatten)]
        args: copy::CopyArgs,
    },
    /// List, describe, reset and delete consumer groups.
    Groups {
        #[command(flatten)]
        address: AgentAddress,
        #[command(subcommand)]
        command: groups::GroupsCommand,
    },
    /// List live agents.
    Agents {
        #[command(flatten)]
        address: AgentAddress,
        #[command(subcommand)]
        command: agents::AgentsCommand,
    },
    /// Topics, partitions, bytes, consumer lag and agents (with their gRPC
    /// and Kafka client connections) at a glance.
    Status {
        #[command(flatten)]
        address: AgentAddress,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Create, delete and list users (SCRAM credentials in the metadata
    /// store).
    Users {
        #[command(flatten)]
        store: users::Store,
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Add, remove and list ACLs (in the metadata store).
    Acl {
        #[command(flatten)]
        store: users::Store,
        #[command(subcommand)]
        command: acl::AclCommand,
    },
    /// Measure StreamHouse on this machine.
    #[command(subcommand)]
    Bench(bench::Bench),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STREAMHOUSE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(BoxError::from)
        .and_then(|rt| {
            rt.block_on(async {
                match cli.command {
                    Command::Agent(args) => agent::run(*args).await,
                    Command::Topic { address, command } => {
                        topic::topic(&address.target()?, command).await
                    }
                    Command::Produce { address, args } => {
                        produce::produce(&address.target()?, args).await
                    }
                    Command::Consume { address, args } => {
                        consume::consume(&address.target()?, args).await
                    }
                    Command::Copy { address, args } => copy::copy(&address.target()?, args).await,
                    Command::Groups { address, command } => {
                        groups::groups(&address.target()?, command).await
                    }
                    Command::Agents { address, command } => {
                        agents::agents(&address.target()?, command).await
                    }
                    Command::Status { address, output } => {
                        status::status(&address.target()?, output).await
                    }
                    Command::Users { store, command } => users::users(&store, command).await,
                    Command::Acl { store, command } => acl::acl(&store, command).await,
                    Command::Bench(b) => bench::run(b).await,
                }
            })
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}
