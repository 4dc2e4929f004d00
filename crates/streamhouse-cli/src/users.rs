//! `streamhouse users`: SCRAM users in the metadata store. Agents read
//! users from the store, so these commands need no running agent (which is
//! how the first user of a cluster that requires authentication is made).

use std::io::BufRead;
use std::sync::Arc;

use streamhouse_core::scram::{self, Credential, Mechanism};
use streamhouse_metadata::MetadataStore;

use crate::{BoxError, Output};

/// The metadata store the command works on.
#[derive(clap::Args)]
pub struct Store {
    /// Metadata store: sqlite://PATH or postgres://USER@HOST:PORT/DB (the
    /// agents' --metadata).
    #[arg(
        long,
        env = "STREAMHOUSE_METADATA",
        hide_env_values = true,
        default_value = "sqlite://streamhouse-data/metadata.db",
        global = true
    )]
    metadata: String,
}

impl Store {
    pub async fn open(&self) -> Result<Arc<dyn MetadataStore>, BoxError> {
        Ok(streamhouse_metadata::open(&self.metadata).await?)
    }
}

#[derive(clap::Subcommand)]
pub enum UsersCommand {
    /// Create a user, or set a new password for one. The password comes
    /// from STREAMHOUSE_USER_PASSWORD, else from the first line of
    /// standard input; only salted SCRAM credentials are stored.
    Create {
        name: String,
        /// Mechanisms to store credentials for.
        #[arg(long, value_enum, default_values_t = [MechanismArg::ScramSha256, MechanismArg::ScramSha512])]
        mechanism: Vec<MechanismArg>,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = scram::DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Delete a user (every mechanism, unless --mechanism).
    Delete {
        name: String,
        #[arg(long, value_enum)]
        mechanism: Option<MechanismArg>,
    },
    /// List users and their mechanisms.
    List {
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MechanismArg {
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl From<MechanismArg> for Mechanism {
    fn from(m: MechanismArg) -> Mechanism {
        match m {
            MechanismArg::ScramSha256 => Mechanism::Sha256,
            MechanismArg::ScramSha512 => Mechanism::Sha512,
        }
    }
}

fn password() -> Result<String, BoxError> {
    if let Ok(p) = std::env::var("STREAMHOUSE_USER_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        return Err(
            "no password: set STREAMHOUSE_USER_PASSWORD or write it on standard input".into(),
        );
    }
    Ok(p)
}

pub async fn users(store: &Store, command: UsersCommand) -> Result<(), BoxError> {
    let metadata = store.open().await?;
    match command {
        UsersCommand::Create {
            name,
            mut mechanism,
            iterations,
        } => {
            let password = password()?;
            mechanism.dedup();
            for m in mechanism {
                let credential = Credential::new(m.into(), &password, iterations)?;
                metadata.upsert_scram_credential(&name, &credential).await?;
            }
            println!("user {name:?} saved");
        }
        UsersCommand::Delete { name, mechanism } => {
            let deleted = match mechanism {
                Some(m) => metadata.delete_scram_credential(&name, m.into()).await?,
                None => metadata.delete_user(&name).await?,
            };
            if !deleted {
                return Err(format!("no user {name:?} (with that mechanism)").into());
            }
            println!("user {name:?} deleted");
        }
        UsersCommand::List { output } => {
            let mut users: Vec<(String, Vec<&'static str>)> = Vec::new();
            for u in metadata.scram_credentials().await? {
                let name = u.credential.mechanism.name();
                match users.last_mut() {
                    Some((user, mechanisms)) if *user == u.user => mechanisms.push(name),
                    _ => users.push((u.user, vec![name])),
                }
            }
            match output {
                Output::Json => {
                    let list: Vec<_> = users
                        .iter()
                        .map(|(user, m)| serde_json::json!({"user": user, "mechanisms": m}))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                }
                Output::Table => {
                    println!("{:<32} MECHANISMS", "USER");
                    for (user, m) in users {
                        println!("{user:<32} {}", m.join(","));
                    }
                }
            }
        }
    }
    Ok(())
}
