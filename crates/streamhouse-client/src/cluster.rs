//! Discovery of agents and topics, through the metadata store or through
//! any agent (bootstrap), with health tracking, zone preference and
//! failover.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamhouse_metadata::MetadataStore;
use streamhouse_proto as pb;
use streamhouse_proto::stream_house_client::StreamHouseClient;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::backoff::RetryPolicy;
use crate::error::{Error, Result};
use crate::security::{AuthHeader, Security};

/// The gRPC client of one agent, with the client's credentials on every
/// request.
pub(crate) type Rpc = StreamHouseClient<InterceptedService<Channel, AuthHeader>>;

/// Where agents and topics are discovered.
#[derive(Clone)]
pub(crate) enum Source {
    Metadata(Arc<dyn MetadataStore>),
    Bootstrap(Vec<String>),
}

impl Source {
    /// The source a builder names: exactly one of a metadata store and
    /// bootstrap addresses.
    pub fn from_builder(
        metadata: Option<Arc<dyn MetadataStore>>,
        bootstrap: Vec<String>,
    ) -> Result<Source> {
        match (metadata, bootstrap.is_empty()) {
            (Some(m), true) => Ok(Source::Metadata(m)),
            (None, false) => Ok(Source::Bootstrap(bootstrap)),
            (Some(_), false) => Err(Error::Config(
                "set metadata_store or bootstrap, not both".into(),
            )),
            (None, true) => Err(Error::Config(
                "a metadata_store or a bootstrap agent address is required".into(),
            )),
        }
    }
}

/// Connection settings shared by every client type, built by
/// [`ClusterConfig::new`].
#[derive(Clone, Debug)]
pub(crate) struct ClusterConfig {
    pub group: String,
    pub zone: Option<String>,
    pub request_timeout: Duration,
    pub refresh_interval: Duration,
    /// Retries of every call.
    pub retry: RetryPolicy,
    /// How long an agent that failed is avoided.
    pub failure_cooldown: Duration,
    pub max_message_bytes: usize,
    /// TLS and credentials.
    pub security: Security,
}

impl ClusterConfig {
    /// The settings of a client of agent group `group`; `retry` carries the
    /// request timeout.
    pub fn new(
        group: impl Into<String>,
        zone: Option<String>,
        retry: RetryPolicy,
        refresh_interval: Duration,
        max_message_bytes: usize,
    ) -> Self {
        ClusterConfig {
            group: group.into(),
            zone,
            request_timeout: retry.request_timeout,
            refresh_interval,
            retry,
            failure_cooldown: Duration::from_secs(5),
            max_message_bytes,
            security: Security::default(),
        }
    }

    /// The same settings, with `security`.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }
}

#[derive(Clone)]
struct KnownAgent {
    id: String,
    address: String,
    zone: Option<String>,
    failed_until: Option<Instant>,
}

#[derive(Default)]
struct State {
    agents: Vec<KnownAgent>,
    refreshed_at: Option<Instant>,
    clients: HashMap<String, Rpc>,
    topics: HashMap<String, (u32, Instant)>,
    /// How long the agents take an agent without a heartbeat to be alive,
    /// as they report it.
    agent_ttl: Option<Duration>,
}

/// A connection to an agent chosen for one request.
#[derive(Clone)]
pub(crate) struct AgentConn {
    pub id: String,
    pub address: String,
    pub client: Rpc,
}

/// The client's view of the cluster.
pub(crate) struct Cluster {
    source: Source,
    pub config: ClusterConfig,
    state: Mutex<State>,
    /// Spreads clients over agents of equal preference.
    salt: usize,
}

impl Cluster {
    /// A bootstrap address written `https://...` turns TLS on.
    pub fn new(source: Source, mut config: ClusterConfig) -> Self {
        let source = match source {
            Source::Bootstrap(addresses) => Source::Bootstrap(
                addresses
                    .iter()
                    .map(|a| config.security.strip_scheme(a))
                    .collect(),
            ),
            other => other,
        };
        Cluster {
            source,
            config,
            state: Mutex::default(),
            salt: rand::random::<u32>() as usize,
        }
    }

    /// The client of the agent at `address` (one channel per address).
    pub(crate) fn client(&self, address: &str) -> Result<Rpc> {
        let mut state = self.state.lock().expect("cluster lock");
        if let Some(c) = state.clients.get(address) {
            return Ok(c.clone());
        }
        let bad = |e: tonic::transport::Error| {
            Error::Config(format!("bad agent address {address:?}: {e}"))
        };
        let security = &self.config.security;
        let scheme = if security.tls() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}")).map_err(bad)?;
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        if let Some(tls) = security.tls_config(host) {
            endpoint = endpoint.tls_config(tls).map_err(bad)?;
        }
        let endpoint = endpoint
            .connect_timeout(self.config.request_timeout.min(Duration::from_secs(5)))
            .timeout(self.config.request_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let client =
            StreamHouseClient::with_interceptor(endpoint.connect_lazy(), security.interceptor()?)
                .max_decoding_message_size(self.config.max_message_bytes)
                .max_encoding_message_size(self.config.max_message_bytes);
        state.clients.insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// Reloads the live agents of the group.
    pub async fn refresh_agents(&self) -> Result<()> {
        let retry = self.config.retry;
        let agents = match &self.source {
            Source::Metadata(store) => {
                let mut listed = retry
                    .run_metadata(|| store.list_agents(Some(&self.config.group)))
                    .await?;
                listed.sort_by_key(|a| a.heartbeat_age);
                let ttl = match self.agent_ttl() {
                    Some(ttl) => ttl,
                    // None registered: nothing to judge.
                    None if listed.is_empty() => Duration::ZERO,
                    None => self.learn_agent_ttl(&listed).await?,
                };
                listed
                    .into_iter()
                    .filter(|a| a.is_live(ttl))
                    .map(|a| KnownAgent {
                        id: a.agent_id,
                        address: a.address,
                        zone: a.zone,
                        failed_until: None,
                    })
                    .collect()
            }
            Source::Bootstrap(addresses) => {
                let response = self
                    .any_agent_call(addresses, |mut c| async move {
                        c.get_metadata(pb::MetadataRequest {
                            agent_group: String::new(),
                            ..Default::default()
                        })
                        .await
                    })
                    .await?;
                self.note_agent_ttl(response.agent_ttl_ms);
                response
                    .agents
                    .into_iter()
                    .filter(|a| a.group == self.config.group)
                    .map(|a| KnownAgent {
                        id: a.agent_id,
                        address: a.address,
                        zone: (!a.zone.is_empty()).then_some(a.zone),
                        failed_until: None,
                    })
                    .collect()
            }
        };
        let mut state = self.state.lock().expect("cluster lock");
        // Keep failure marks of agents still listed.
        let old: HashMap<String, Option<Instant>> = state
            .agents
            .iter()
            .map(|a| (a.id.clone(), a.failed_until))
            .collect();
        state.agents = agents;
        for a in &mut state.agents {
            a.failed_until = old.get(&a.id).copied().flatten();
        }
        state.refreshed_at = Some(Instant::now());
        Ok(())
    }

    /// The agents' liveness TTL, once an agent reported it.
    fn agent_ttl(&self) -> Option<Duration> {
        self.state.lock().expect("cluster lock").agent_ttl
    }

    fn note_agent_ttl(&self, ttl_ms: u64) {
        if ttl_ms > 0 {
            self.state.lock().expect("cluster lock").agent_ttl =
                Some(Duration::from_millis(ttl_ms));
        }
    }

    /// Asks the registered agents, most recent heartbeat first, for the
    /// liveness TTL they apply (an agent is live while its last heartbeat
    /// is younger), so the client judges liveness as the agents do.
    async fn learn_agent_ttl(
        &self,
        registered: &[streamhouse_metadata::AgentInfo],
    ) -> Result<Duration> {
        let mut last = None;
        for agent in registered {
            let mut client = self.client(&agent.address)?;
            let request = pb::MetadataRequest {
                agent_group: self.config.group.clone(),
                ..Default::default()
            };
            match client.get_metadata(request).await {
                Ok(r) if r.get_ref().agent_ttl_ms > 0 => {
                    self.note_agent_ttl(r.get_ref().agent_ttl_ms);
                    return Ok(Duration::from_millis(r.get_ref().agent_ttl_ms));
                }
                Ok(_) => {}
                Err(status) => {
                    last = Some(Error::Rpc {
                        address: agent.address.clone(),
                        status: Arc::new(status),
                    })
                }
            }
        }
        Err(Error::NoAgents {
            group: self.config.group.clone(),
            reason: format!(
                "none of the {} registered agents told its liveness period{}; start one with `streamhouse agent --group {}`",
                registered.len(),
                last.map_or_else(String::new, |e| format!(" ({e})")),
                self.config.group
            ),
        })
    }

    /// Calls the first bootstrap or known agent that answers; when none
    /// does, tries them all again under the retry policy.
    async fn any_agent_call<T, F, Fut>(&self, bootstrap: &[String], call: F) -> Result<T>
    where
        F: Fn(Rpc) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.config
            .retry
            .run(None, || self.any_agent_round(bootstrap, &call))
            .await
    }

    /// One round of [`any_agent_call`](Self::any_agent_call).
    async fn any_agent_round<T, F, Fut>(&self, bootstrap: &[String], call: &F) -> Result<T>
    where
        F: Fn(Rpc) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut candidates: Vec<String> = {
            let state = self.state.lock().expect("cluster lock");
            state.agents.iter().map(|a| a.address.clone()).collect()
        };
        for b in bootstrap {
            if !candidates.contains(b) {
                candidates.push(b.clone());
            }
        }
        let mut last = None;
        for address in candidates {
            match call(self.client(&address)?).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) => {
                    let e = Error::Rpc {
                        address,
                        status: Arc::new(status),
                    };
                    // The agent answered: its answer stands.
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(Error::NoAgents {
            group: self.config.group.clone(),
            reason: match last {
                Some(e) => format!("no bootstrap agent answered ({e})"),
                None => "no bootstrap address".into(),
            },
        })
    }

    /// The agent to send the next request to: a healthy one, preferring the
    /// configured zone. Refreshes the agent list when it is stale.
    pub async fn agent(&self) -> Result<AgentConn> {
        let stale = {
            let state = self.state.lock().expect("cluster lock");
            state
                .refreshed_at
                .is_none_or(|t| t.elapsed() >= self.config.refresh_interval)
                || state.agents.is_empty()
        };
        if stale {
            self.refresh_agents().await?;
        }
        let now = Instant::now();
        let chosen = {
            let state = self.state.lock().expect("cluster lock");
            let n = state.agents.len();
            let rank = |a: &KnownAgent| {
                let healthy = a.failed_until.is_none_or(|t| t <= now);
                let same_zone = self.config.zone.is_some() && a.zone == self.config.zone;
                (!healthy, !same_zone)
            };
            (0..n)
                .map(|i| &state.agents[(i + self.salt) % n])
                .min_by_key(|a| rank(a))
                .cloned()
        };
        let Some(agent) = chosen else {
            return Err(Error::NoAgents {
                group: self.config.group.clone(),
                reason: format!(
                    "none registered with a heartbeat in the last {}; start one with `streamhouse agent --group {}`",
                    self.agent_ttl()
                        .map_or_else(|| "liveness period".into(), |t| format!("{t:?}")),
                    self.config.group
                ),
            });
        };
        Ok(AgentConn {
            client: self.client(&agent.address)?,
            id: agent.id,
            address: agent.address,
        })
    }

    /// Avoids an agent for a while after a failed request.
    pub fn report_failure(&self, agent_id: &str) {
        let mut state = self.state.lock().expect("cluster lock");
        let until = Instant::now() + self.config.failure_cooldown;
        for a in state.agents.iter_mut().filter(|a| a.id == agent_id) {
            a.failed_until = Some(until);
        }
    }

    /// Partition count of a topic, cached for the refresh interval.
    pub async fn partitions(&self, topic: &str) -> Result<u32> {
        if let Some((count, at)) = self.state.lock().expect("cluster lock").topics.get(topic)
            && at.elapsed() < self.config.refresh_interval
        {
            return Ok(*count);
        }
        let count = match &self.source {
            Source::Metadata(store) => self
                .config
                .retry
                .run_metadata(|| store.get_topic(topic))
                .await?
                .map(|t| t.partition_count),
            Source::Bootstrap(_) => {
                let request = pb::MetadataRequest {
                    topics: vec![topic.to_string()],
                    ..Default::default()
                };
                let response = self
                    .call(|mut c| {
                        let r = request.clone();
                        async move { c.get_metadata(r).await }
                    })
                    .await?;
                self.note_agent_ttl(response.agent_ttl_ms);
                response
                    .topics
                    .into_iter()
                    .find(|t| t.name == topic)
                    .map(|t| t.partition_count)
            }
        };
        let mut state = self.state.lock().expect("cluster lock");
        match count {
            Some(c) => {
                state.topics.insert(topic.to_string(), (c, Instant::now()));
                Ok(c)
            }
            None => {
                state.topics.remove(topic);
                Err(Error::UnknownTopic(topic.to_string()))
            }
        }
    }

    /// Forgets a topic's partition count (after an unknown-partition error).
    pub fn invalidate_topic(&self, topic: &str) {
        self.state
            .lock()
            .expect("cluster lock")
            .topics
            .remove(topic);
    }

    /// Runs `call` on the bootstrap agents or any agent listed so far,
    /// whatever its group (for admin calls).
    pub async fn call_any<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Rpc) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let bootstrap = match &self.source {
            Source::Bootstrap(b) => b.clone(),
            Source::Metadata(_) => Vec::new(),
        };
        self.any_agent_call(&bootstrap, call).await
    }

    /// Runs `call` on an agent, failing over to other agents and retrying
    /// with backoff under the retry policy while the error is retryable.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Rpc) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_within(None, call).await
    }

    /// [`call`](Self::call), giving up once `deadline` would pass.
    pub async fn call_within<T, F, Fut>(&self, deadline: Option<Instant>, call: F) -> Result<T>
    where
        F: Fn(Rpc) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.config
            .retry
            .run(deadline, || async {
                let conn = self.agent().await?;
                match call(conn.client.clone()).await {
                    Ok(r) => Ok(r.into_inner()),
                    Err(status) => {
                        let e = Error::Rpc {
                            address: conn.address.clone(),
                            status: Arc::new(status),
                        };
                        if e.is_retryable() {
                            self.report_failure(&conn.id);
                        }
                        Err(e)
                    }
                }
            })
            .await
    }
}
