//! How a client reaches agents that use TLS or require authentication.
//!
//! ```no_run
//! # async fn example() -> streamhouse_client::Result<()> {
//! use streamhouse_client::{Producer, Security};
//! let security = Security::new()
//!     .tls_ca_file("ca.pem")?          // or .tls_system_roots()
//!     .credentials("alice", "s3cret"); // or .client_certificate(...)
//! let producer = Producer::builder()
//!     .bootstrap("agent-1.internal:50051")
//!     .security(security)
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! With TLS on, every agent is reached over TLS and its certificate must
//! name the host the client connects to. A bootstrap address written
//! `https://host:port` turns TLS on with the system's root certificates.
//! Credentials go with every request in the `authorization` header (HTTP
//! Basic); agents refuse them over plain text unless configured otherwise.

use std::fmt;
use std::path::Path;

use base64::Engine;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::{Error, Result};

/// TLS and credentials for every connection of a client to agents.
#[derive(Clone, Default)]
pub struct Security {
    tls: Option<Tls>,
    credentials: Option<(String, String)>,
    plaintext_credentials: bool,
}

#[derive(Clone, Default)]
struct Tls {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

impl Security {
    /// No TLS, no credentials.
    pub fn new() -> Security {
        Security::default()
    }

    /// TLS, trusting the system's root certificates.
    pub fn tls_system_roots(mut self) -> Security {
        self.tls.get_or_insert_with(Tls::default);
        self
    }

    /// TLS, trusting the CA certificates of a PEM file (instead of the
    /// system's roots).
    pub fn tls_ca_file(self, path: impl AsRef<Path>) -> Result<Security> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the TLS CA file {}: {e}",
                path.display()
            ))
        })?;
        Ok(self.tls_ca_pem(pem))
    }

    /// TLS, trusting these PEM CA certificates.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Security {
        self.tls.get_or_insert_with(Tls::default).ca_pem = Some(pem.into());
        self
    }

    /// A client certificate and its key (PEM), for agents that
    /// authenticate clients by certificate (mutual TLS). Turns TLS on.
    pub fn client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Security {
        self.tls.get_or_insert_with(Tls::default).identity =
            Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The user name and password sent with every request.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Security {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Sends the credentials even without TLS, where anyone on the path can
    /// read them; only for agents run with `--allow-plaintext-passwords`
    /// on a trusted network. Without this, credentials without TLS are a
    /// configuration error.
    pub fn allow_plaintext_credentials(mut self) -> Security {
        self.plaintext_credentials = true;
        self
    }

    /// Whether connections use TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Turns TLS on with the system roots when a bootstrap address is
    /// written `https://...`, and returns the address without its scheme.
    pub(crate) fn strip_scheme(&mut self, address: &str) -> String {
        if let Some(rest) = address.strip_prefix("https://") {
            self.tls.get_or_insert_with(Tls::default);
            rest.to_string()
        } else {
            address
                .strip_prefix("http://")
                .unwrap_or(address)
                .to_string()
        }
    }

    /// The TLS settings for a connection to `host`.
    pub(crate) fn tls_config(&self, host: &str) -> Option<ClientTlsConfig> {
        let tls = self.tls.as_ref()?;
        let mut config =
            ClientTlsConfig::new().domain_name(host.trim_start_matches('[').trim_end_matches(']'));
        config = match &tls.ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        Some(config)
    }

    /// What adds the credentials to every request.
    pub(crate) fn interceptor(&self) -> Result<AuthHeader> {
        let Some((user, password)) = &self.credentials else {
            return Ok(AuthHeader(None));
        };
        if self.tls.is_none() && !self.plaintext_credentials {
            return Err(Error::Config(
                "credentials are only sent over TLS: trust a CA (tls_ca_file, tls_system_roots) \
                 or use an https:// address, or call allow_plaintext_credentials()"
                    .into(),
            ));
        }
        if user.is_empty() || user.contains(':') {
            return Err(Error::Config(
                "the user name must be non-empty and must not contain ':'".into(),
            ));
        }
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value: MetadataValue<Ascii> = format!("Basic {encoded}")
            .parse()
            .map_err(|_| Error::Config("the credentials cannot be sent as a header".into()))?;
        value.set_sensitive(true);
        Ok(AuthHeader(Some(value)))
    }
}

/// Adds the `authorization` header to every request, when credentials are
/// set.
#[derive(Clone)]
pub(crate) struct AuthHeader(Option<MetadataValue<Ascii>>);

impl Interceptor for AuthHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_addresses_turn_tls_on_and_debug_hides_the_password() {
        let mut s = Security::new().credentials("alice", "s3cret");
        assert_eq!(s.strip_scheme("https://agent:50051"), "agent:50051");
        assert!(s.tls());
        assert!(!format!("{s:?}").contains("s3cret"));
        let mut plain = Security::new();
        assert_eq!(plain.strip_scheme("agent:50051"), "agent:50051");
        assert!(!plain.tls());
    }

    #[test]
    fn user_names_with_colons_are_refused() {
        assert!(
            Security::new()
                .credentials("a:b", "x")
                .interceptor()
                .is_err()
        );
        assert!(Security::new().credentials("", "x").interceptor().is_err());
    }
}
