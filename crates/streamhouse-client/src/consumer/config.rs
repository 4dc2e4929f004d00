//! Consumer settings and the builder that validates them and starts a
//! consumer.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamhouse_metadata::{MetadataStore, TopicPartition};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::fetcher::run_fetcher;
use super::group::{RebalanceListener, run_heartbeats};
use super::{AutoOffsetReset, Consumer, Inner, IsolationLevel, State};
use crate::backoff::RetryPolicy;
use crate::cluster::{Cluster, ClusterConfig, Source};
use crate::error::{Error, Result};
use crate::security::Security;

/// Consumer settings; every field is set through [`ConsumerBuilder`].
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub group_id: Option<String>,
    pub client_id: String,
    pub agent_group: String,
    pub zone: Option<String>,
    pub auto_offset_reset: AutoOffsetReset,
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
    pub max_poll_records: usize,
    pub fetch_max_bytes: usize,
    pub max_partition_fetch_bytes: usize,
    pub fetch_max_wait: Duration,
    pub max_prefetch_bytes: usize,
    pub isolation_level: IsolationLevel,
    pub session_timeout: Duration,
    /// The server-side assignor asked for (`None`: the group's default).
    pub group_assignor: Option<String>,
    pub request_timeout: Duration,
    pub agent_refresh_interval: Duration,
    pub max_retries: u32,
    pub retry_backoff: Duration,
    pub skip_corrupt_batches: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            client_id: "streamhouse-consumer".into(),
            agent_group: "default".into(),
            zone: None,
            auto_offset_reset: AutoOffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            max_poll_records: 500,
            fetch_max_bytes: 50 << 20,
            max_partition_fetch_bytes: 1 << 20,
            fetch_max_wait: Duration::from_millis(500),
            max_prefetch_bytes: 64 << 20,
            isolation_level: IsolationLevel::ReadUncommitted,
            session_timeout: Duration::from_secs(10),
            group_assignor: None,
            request_timeout: Duration::from_secs(30),
            agent_refresh_interval: Duration::from_secs(30),
            max_retries: 3,
            retry_backoff: Duration::from_millis(100),
            skip_corrupt_batches: false,
        }
    }
}

/// Builds a [`Consumer`]: discovery (`metadata_store` or `bootstrap`), then
/// `subscribe` (with a `group_id`) or `assign`.
#[derive(Default)]
#[must_use]
pub struct ConsumerBuilder {
    metadata: Option<Arc<dyn MetadataStore>>,
    bootstrap: Vec<String>,
    subscribe: Vec<String>,
    assign: Vec<TopicPartition>,
    listener: Option<Arc<dyn RebalanceListener>>,
    config: ConsumerConfig,
    security: Security,
}

impl ConsumerBuilder {
    /// TLS and credentials for the connections to agents (see
    /// [`Security`]). Default: plain text, no credentials (a bootstrap
    /// address written `https://host:port` turns TLS on).
    pub fn security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Discover agents through this metadata store.
    pub fn metadata_store(mut self, store: Arc<dyn MetadataStore>) -> Self {
        self.metadata = Some(store);
        self
    }
    /// Discover agents through an agent at `host:port` (repeatable).
    pub fn bootstrap(mut self, address: impl Into<String>) -> Self {
        self.bootstrap.push(address.into());
        self
    }
    /// Consumer group: with `subscribe`, partitions are shared among its
    /// members; offsets are committed under it. Default: none.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.config.group_id = Some(group.into());
        self
    }
    /// Topics to consume as a group member (needs `group_id`).
    pub fn subscribe<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subscribe = topics.into_iter().map(Into::into).collect();
        self
    }
    /// Partitions to consume without group membership.
    pub fn assign(mut self, partitions: impl IntoIterator<Item = TopicPartition>) -> Self {
        self.assign = partitions.into_iter().collect();
        self
    }
    /// Where to start without a committed offset. Default `Latest`.
    pub fn auto_offset_reset(mut self, reset: AutoOffsetReset) -> Self {
        self.config.auto_offset_reset = reset;
        self
    }
    /// Commit positions automatically. Default on (needs `group_id`).
    pub fn enable_auto_commit(mut self, enabled: bool) -> Self {
        self.config.enable_auto_commit = enabled;
        self
    }
    /// How often automatic commits happen. Default 5 s.
    pub fn auto_commit_interval(mut self, interval: Duration) -> Self {
        self.config.auto_commit_interval = interval;
        self
    }
    /// Most records one `poll` returns. Default 500.
    pub fn max_poll_records(mut self, records: usize) -> Self {
        self.config.max_poll_records = records;
        self
    }
    /// Byte budget of one fetch request. Default 50 MiB.
    pub fn fetch_max_bytes(mut self, bytes: usize) -> Self {
        self.config.fetch_max_bytes = bytes;
        self
    }
    /// Byte budget per partition in one fetch. Default 1 MiB.
    pub fn max_partition_fetch_bytes(mut self, bytes: usize) -> Self {
        self.config.max_partition_fetch_bytes = bytes;
        self
    }
    /// Longest an agent holds a fetch waiting for records. Default 500 ms.
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.config.fetch_max_wait = wait;
        self
    }
    /// Most bytes of fetched, not yet polled records held, over all
    /// partitions. Default 64 MiB.
    pub fn max_prefetch_bytes(mut self, bytes: usize) -> Self {
        self.config.max_prefetch_bytes = bytes;
        self
    }
    /// Default `ReadUncommitted`.
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.config.isolation_level = level;
        self
    }
    /// The group removes a member silent for this long. Default 10 s.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout = timeout;
        self
    }
    /// The server-side assignor this member asks for: `uniform` (sticky,
    /// balanced; the default) or `range` (each topic's partitions in
    /// contiguous ranges over its subscribers). The group uses the one most
    /// of its members ask for, Kafka consumers' `group.remote.assignor`
    /// included.
    pub fn group_assignor(mut self, assignor: impl Into<String>) -> Self {
        self.config.group_assignor = Some(assignor.into());
        self
    }
    /// Timeout of one request to an agent. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }
    /// Retries of a failed call to the cluster (offsets, group heartbeats,
    /// fetches, metadata) before it fails. Default 3.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.config.max_retries = retries;
        self
    }
    /// Wait before the first retry; doubles per retry, with ±25% jitter,
    /// never longer than `request_timeout`. Default 100 ms.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.config.retry_backoff = backoff;
        self
    }
    /// Agent group to talk to. Default `"default"`.
    pub fn agent_group(mut self, group: impl Into<String>) -> Self {
        self.config.agent_group = group.into();
        self
    }
    /// Prefer agents in this zone.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.config.zone = Some(zone.into());
        self
    }
    /// Client id shown in group descriptions.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = id.into();
        self
    }
    /// Called on partition moves (from `poll`).
    /// Skip stored batches that are damaged (the agent found them failing
    /// their CRC) instead of failing `poll` with [`Error::CorruptBatch`]:
    /// their records are lost to this consumer, and each skip is logged.
    /// Default false.
    pub fn skip_corrupt_batches(mut self, skip: bool) -> Self {
        self.config.skip_corrupt_batches = skip;
        self
    }

    pub fn rebalance_listener(mut self, listener: Arc<dyn RebalanceListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Validates the settings, finds an agent and starts the consumer.
    pub async fn build(self) -> Result<Consumer> {
        let c = &self.config;
        let source = Source::from_builder(self.metadata, self.bootstrap)?;
        match (self.subscribe.is_empty(), self.assign.is_empty()) {
            (false, false) => return Err(Error::Config("subscribe or assign, not both".into())),
            (true, true) => {
                return Err(Error::Config(
                    "subscribe to topics or assign partitions".into(),
                ));
            }
            (false, true) if c.group_id.is_none() => {
                return Err(Error::Config("subscribe needs a group_id".into()));
            }
            _ => {}
        }
        if c.enable_auto_commit && c.group_id.is_none() && !self.assign.is_empty() {
            return Err(Error::Config(
                "enable_auto_commit needs a group_id (or enable_auto_commit(false))".into(),
            ));
        }
        if let Some(a) = c
            .group_assignor
            .as_deref()
            .filter(|a| !streamhouse_metadata::assignment::ASSIGNORS.contains(a))
        {
            return Err(Error::Config(format!(
                "group_assignor {a:?} is not one of {}",
                streamhouse_metadata::assignment::ASSIGNORS.join(", ")
            )));
        }
        if c.max_poll_records == 0 {
            return Err(Error::Config("max_poll_records must be at least 1".into()));
        }
        let cluster = Cluster::new(
            source,
            ClusterConfig::new(
                c.agent_group.clone(),
                c.zone.clone(),
                RetryPolicy {
                    max_retries: c.max_retries,
                    retry_backoff: c.retry_backoff,
                    request_timeout: c.request_timeout,
                },
                c.agent_refresh_interval,
                c.fetch_max_bytes + (8 << 20),
            )
            .with_security(self.security.clone()),
        );
        cluster.agent().await?;
        let subscribed = !self.subscribe.is_empty();
        let inner = Arc::new(Inner {
            config: self.config,
            cluster,
            subscription: self.subscribe,
            listener: self.listener,
            state: Mutex::new(State::default()),
            data: Notify::new(),
            fetch_wake: Notify::new(),
            heartbeat_wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        if !subscribed {
            inner.add_partitions(&self.assign).await?;
        }
        let mut tasks = vec![tokio::spawn(run_fetcher(inner.clone()))];
        if subscribed {
            tasks.push(tokio::spawn(run_heartbeats(inner.clone())));
        }
        Ok(Consumer {
            inner,
            tasks: Mutex::new(tasks),
            last_auto_commit: Mutex::new(Instant::now()),
        })
    }
}
