//! The agent a client command talks to, and how: address, TLS and
//! credentials, from flags or environment variables.

use std::path::PathBuf;

use streamhouse_client::{Admin, Security};

use crate::BoxError;

/// Where client commands send their requests, and how they connect.
#[derive(clap::Args)]
pub struct AgentAddress {
    /// Address (host:port) of any agent; `https://host:port` connects with
    /// TLS, trusting the system's root certificates.
    #[arg(
        long,
        short = 'a',
        env = "STREAMHOUSE_AGENT",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    agent: String,
    /// Connect with TLS, trusting the CA certificates of this PEM file.
    #[arg(long, env = "STREAMHOUSE_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for agents that authenticate clients by
    /// certificate; turns TLS on.
    #[arg(
        long,
        env = "STREAMHOUSE_TLS_CLIENT_CERT",
        requires = "tls_client_key",
        global = true
    )]
    tls_client_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-client-cert.
    #[arg(
        long,
        env = "STREAMHOUSE_TLS_CLIENT_KEY",
        requires = "tls_client_cert",
        global = true
    )]
    tls_client_key: Option<PathBuf>,
    /// User name, for agents that require authentication (with --password).
    // Not `requires = "password"`: clap checks `requires` of global
    // arguments before it propagates them between subcommand levels, so a
    // --user flag with the password from STREAMHOUSE_PASSWORD was refused.
    // `target` checks that the two come together.
    #[arg(long, env = "STREAMHOUSE_USER", global = true)]
    user: Option<String>,
    /// Password of --user (prefer the environment variable: command lines
    /// are visible to other users of the machine).
    #[arg(
        long,
        env = "STREAMHOUSE_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    password: Option<String>,
    /// Send --user and --password without TLS, readable by anyone on the
    /// path (only for agents run with --allow-plaintext-passwords).
    #[arg(long, env = "STREAMHOUSE_ALLOW_PLAINTEXT_PASSWORD", global = true)]
    allow_plaintext_password: bool,
}

/// An agent address with the security settings to reach it.
pub struct Target {
    /// `host:port`, without a scheme.
    pub agent: String,
    pub security: Security,
}

impl AgentAddress {
    pub fn target(&self) -> Result<Target, BoxError> {
        let mut security = Security::new();
        let agent = match self.agent.strip_prefix("https://") {
            Some(rest) => {
                security = security.tls_system_roots();
                rest.to_string()
            }
            None => self.agent.trim_start_matches("http://").to_string(),
        };
        if let Some(ca) = &self.tls_ca {
            security = security.tls_ca_file(ca)?;
        }
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            security = security.client_certificate(read(cert)?, read(key)?);
        }
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => security = security.credentials(user, password),
            (None, None) => {}
            (Some(_), None) => {
                return Err(
                    "--user needs a password: set STREAMHOUSE_PASSWORD or pass --password".into(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "a password needs a user name: pass --user or set STREAMHOUSE_USER".into(),
                );
            }
        }
        if self.allow_plaintext_password {
            security = security.allow_plaintext_credentials();
        } else if self.user.is_some() && !security.tls() {
            return Err(
                "--user and its password are only sent over TLS: pass --tls-ca or an \
                        https:// --agent address (or --allow-plaintext-password for an agent \
                        run with --allow-plaintext-passwords)"
                    .into(),
            );
        }
        Ok(Target { agent, security })
    }
}

impl Target {
    /// An admin client of the agent.
    pub async fn admin(&self) -> Result<Admin, BoxError> {
        Ok(Admin::connect_with(&self.agent, self.security.clone()).await?)
    }
}
