//! Producer settings and the builder that validates them and starts a
//! producer.

use std::sync::Arc;
use std::time::Duration;

use streamhouse_core::Compression;
use streamhouse_metadata::MetadataStore;

use super::Producer;
use super::transport::{ClusterTransport, Transport};
use crate::backoff::RetryPolicy;
use crate::cluster::{Cluster, ClusterConfig, Source};
use crate::error::{Error, Result};
use crate::security::Security;

/// Producer settings; every field is set through [`ProducerBuilder`].
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    pub agent_group: String,
    pub zone: Option<String>,
    pub batch_size: usize,
    pub batch_timeout: Duration,
    pub compression: Compression,
    pub request_timeout: Duration,
    pub agent_refresh_interval: Duration,
    pub max_retries: u32,
    pub retry_backoff: Duration,
    pub max_buffered_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_request_bytes: usize,
    pub idempotence: bool,
    pub transactional_id: Option<String>,
    pub transaction_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            agent_group: "default".into(),
            zone: None,
            batch_size: 100,
            batch_timeout: Duration::from_millis(100),
            compression: Compression::Lz4,
            request_timeout: Duration::from_secs(30),
            agent_refresh_interval: Duration::from_secs(30),
            max_retries: 3,
            retry_backoff: Duration::from_millis(100),
            max_buffered_bytes: 64 << 20,
            max_batch_bytes: 1 << 20,
            max_request_bytes: 16 << 20,
            idempotence: true,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }
}

impl ProducerConfig {
    /// The retry policy of every call of the producer.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            retry_backoff: self.retry_backoff,
            request_timeout: self.request_timeout,
        }
    }
}

/// Builds a [`Producer`]. Either [`metadata_store`](Self::metadata_store) or
/// [`bootstrap`](Self::bootstrap) is required.
#[derive(Default)]
#[must_use]
pub struct ProducerBuilder {
    metadata: Option<Arc<dyn MetadataStore>>,
    bootstrap: Vec<String>,
    config: ProducerConfig,
    security: Security,
}

impl ProducerBuilder {
    /// TLS and credentials for the connections to agents (see
    /// [`Security`]). Default: plain text, no credentials (a bootstrap
    /// address written `https://host:port` turns TLS on).
    pub fn security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Discover agents and topics through this metadata store (the agents
    /// must share it).
    pub fn metadata_store(mut self, store: Arc<dyn MetadataStore>) -> Self {
        self.metadata = Some(store);
        self
    }

    /// Discover agents and topics through an agent at `host:port`; may be
    /// called several times. Applications then need no database access.
    pub fn bootstrap(mut self, address: impl Into<String>) -> Self {
        self.bootstrap.push(address.into());
        self
    }

    /// Agent group to send to. Default `"default"`.
    pub fn agent_group(mut self, group: impl Into<String>) -> Self {
        self.config.agent_group = group.into();
        self
    }

    /// Prefer agents in this availability zone. Default: none.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.config.zone = Some(zone.into());
        self
    }

    /// Records per batch before it is sent. Default 100.
    pub fn batch_size(mut self, records: usize) -> Self {
        self.config.batch_size = records;
        self
    }

    /// Longest a record waits for its batch to fill before it is sent.
    /// Default 100 ms.
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.config.batch_timeout = timeout;
        self
    }

    /// LZ4 compression of batches on (`true`, the default) or off.
    pub fn compression_enabled(mut self, enabled: bool) -> Self {
        self.config.compression = if enabled {
            Compression::Lz4
        } else {
            Compression::None
        };
        self
    }

    /// Compression codec of batches. Default LZ4.
    pub fn compression(mut self, codec: Compression) -> Self {
        self.config.compression = codec;
        self
    }

    /// Timeout of one request to an agent. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// How often the agent list and topic metadata are refreshed.
    /// Default 30 s.
    pub fn agent_refresh_interval(mut self, interval: Duration) -> Self {
        self.config.agent_refresh_interval = interval;
        self
    }

    /// Retries of a batch after a retryable failure before its records fail.
    /// Default 3.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.config.max_retries = retries;
        self
    }

    /// Base retry backoff; doubles per attempt, with ±25% jitter.
    /// Default 100 ms.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.config.retry_backoff = backoff;
        self
    }

    /// Most bytes of records buffered before `send` waits (backpressure).
    /// Default 64 MiB.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.config.max_buffered_bytes = bytes;
        self
    }

    /// Largest batch, uncompressed; a bigger record is refused with
    /// [`Error::RecordTooLarge`]. Default 1 MiB.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.config.max_batch_bytes = bytes;
        self
    }

    /// Largest produce request. Default 16 MiB.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.config.max_request_bytes = bytes;
        self
    }

    /// Idempotent delivery (retries never duplicate records). Default on.
    pub fn idempotence(mut self, enabled: bool) -> Self {
        self.config.idempotence = enabled;
        self
    }

    /// Makes the producer transactional under this id (needs idempotence):
    /// call [`Producer::init_transactions`] once, then send records inside
    /// `begin_transaction` … `commit_transaction`. A new producer with the
    /// same id fences the old one. Default: none.
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.config.transactional_id = Some(id.into());
        self
    }

    /// A transaction open longer than this is aborted by the agents.
    /// Default 60 s.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.config.transaction_timeout = timeout;
        self
    }

    /// Validates the settings, discovers the agents, obtains a producer id
    /// (with idempotence) and starts the producer.
    pub async fn build(self) -> Result<Producer> {
        let c = &self.config;
        let source = Source::from_builder(self.metadata, self.bootstrap)?;
        if c.transactional_id.is_some() && !c.idempotence {
            return Err(Error::Config(
                "a transactional producer needs idempotence".into(),
            ));
        }
        if c.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        if c.agent_group.is_empty() {
            return Err(Error::Config("agent_group must not be empty".into()));
        }
        if c.max_batch_bytes > c.max_buffered_bytes || c.max_batch_bytes > c.max_request_bytes {
            return Err(Error::Config(format!(
                "max_batch_bytes ({}) must not exceed max_buffered_bytes ({}) or max_request_bytes ({})",
                c.max_batch_bytes, c.max_buffered_bytes, c.max_request_bytes
            )));
        }
        if c.max_buffered_bytes > u32::MAX as usize {
            return Err(Error::Config(
                "max_buffered_bytes must be below 4 GiB".into(),
            ));
        }
        let cluster = Arc::new(Cluster::new(
            source.clone(),
            ClusterConfig::new(
                c.agent_group.clone(),
                c.zone.clone(),
                c.retry_policy(),
                c.agent_refresh_interval,
                c.max_request_bytes + (1 << 20),
            )
            .with_security(self.security.clone()),
        ));
        // Fail early and clearly when no agent can be found.
        cluster.agent().await?;
        let transport = Arc::new(ClusterTransport {
            cluster: cluster.clone(),
            source,
        });
        let identity = if c.transactional_id.is_some() {
            None
        } else if c.idempotence {
            Some(transport.init_producer_id(None).await?)
        } else {
            None
        };
        Ok(Producer::start(self.config, cluster, transport, identity))
    }
}
