//! TLS on the agent's listeners (gRPC, Kafka, metrics): one certificate
//! and key, and optionally the CA that signs client certificates.
//!
//! The files are read at start, where a bad file stops the agent, and again
//! on SIGHUP or when one of them changes (checked every 2 s). A reload that
//! fails keeps the configuration in use and logs why; connections already
//! open keep the certificate they shook hands with, new ones get the new
//! one. Client certificates are optional at the TLS layer: a client that
//! presents one signed by the client CA is authenticated by it (see
//! [`subject`]), others authenticate with a password.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

mod stream;
pub(crate) mod subject;

pub(crate) use stream::{AgentStream, ConnInfo, accept, accept_loop};

/// How often the certificate files are checked for changes.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The files TLS is configured from, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The agent's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates that sign client certificates (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Which listener a handshake is for: gRPC negotiates HTTP/2 by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listener {
    Grpc,
    /// Kafka and metrics: no ALPN.
    Plain,
}

struct Configs {
    grpc: Arc<ServerConfig>,
    plain: Arc<ServerConfig>,
}

/// The TLS configuration in use, reloaded when its files change.
pub(crate) struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<Configs>>,
    /// Modification times and sizes of the files the current configuration
    /// was read from.
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl Tls {
    /// Reads the files; any problem is an error naming the file.
    pub(crate) fn load(files: TlsFiles) -> Result<Arc<Tls>> {
        let seen = stamps(&files);
        let configs = build(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(Arc::new(configs)),
            seen: Mutex::new(seen),
        }))
    }

    /// An acceptor with the configuration in use now.
    pub(crate) fn acceptor(&self, listener: Listener) -> TlsAcceptor {
        let configs = self.current.read().expect("tls lock").clone();
        TlsAcceptor::from(match listener {
            Listener::Grpc => configs.grpc.clone(),
            Listener::Plain => configs.plain.clone(),
        })
    }

    /// Reads the files again; on failure the configuration in use stays.
    pub(crate) fn reload(&self) -> Result<()> {
        let seen = stamps(&self.files);
        let configs = build(&self.files)?;
        *self.current.write().expect("tls lock") = Arc::new(configs);
        *self.seen.lock().expect("tls lock") = seen;
        Ok(())
    }

    fn changed(&self) -> bool {
        *self.seen.lock().expect("tls lock") != stamps(&self.files)
    }

    /// Reloads on SIGHUP and when a file changes, until aborted.
    pub(crate) async fn watch(self: Arc<Self>) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; TLS files are still reloaded when they change");
                None
            }
        };
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = tick.tick() => {
                    if !self.changed() {
                        continue;
                    }
                    "a file changed"
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            };
            match self.reload() {
                Ok(()) => {
                    tracing::info!(cert = %self.files.cert.display(), why, "TLS certificate reloaded")
                }
                Err(e) => {
                    tracing::warn!(error = %e, why, "TLS reload failed; the previous certificate stays in use")
                }
            }
        }
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
    .collect()
}

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Config(format!("TLS file {}: {reason}", path.display()))
}

/// The certificates of a PEM file; at least one.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<Configs> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_error(&files.key, format!("no usable private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| tls_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let plain = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&files.key, format!("does not match the certificate: {e}")))?;
    let mut grpc = plain.clone();
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Configs {
        grpc: Arc::new(grpc),
        plain: Arc::new(plain),
    })
}
