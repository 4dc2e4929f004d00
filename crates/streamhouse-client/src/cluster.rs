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
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

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

/// Connection settings shared by every client type.
#[derive(Clone, Debug)]
pub(crate) struct ClusterConfig {
    pub group: String,
    pub zone: Option<String>,
    pub request_timeout: Duration,
    pub refresh_interval: Duration,
    /// Agents whose heartbeat is older are treated as dead.
    pub agent_ttl: Duration,
    /// How long an agent that failed is avoided.
    pub failure_cooldown: Duration,
    pub max_message_bytes: usize,
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
    clients: HashMap<String, StreamHouseClient<Channel>>,
    topics: HashMap<String, (u32, Instant)>,
}

/// A connection to an agent chosen for one request.
#[derive(Clone)]
pub(crate) struct AgentConn {
    pub id: String,
    pub address: String,
    pub client: StreamHouseClient<Channel>,
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
    pub fn new(source: Source, config: ClusterConfig) -> Self {
        Cluster {
            source,
            config,
            state: Mutex::default(),
            salt: rand::random::<u32>() as usize,
        }
    }

    fn client(&self, address: &str) -> Result<StreamHouseClient<Channel>> {
        let mut state = self.state.lock().expect("cluster lock");
        if let Some(c) = state.clients.get(address) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Error::Config(format!("bad agent address {address:?}: {e}")))?
            .connect_timeout(self.config.request_timeout.min(Duration::from_secs(5)))
            .timeout(self.config.request_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let client = StreamHouseClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(self.config.max_message_bytes)
            .max_encoding_message_size(self.config.max_message_bytes);
        state.clients.insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// Reloads the live agents of the group.
    pub async fn refresh_agents(&self) -> Result<()> {
        let agents = match &self.source {
            Source::Metadata(store) => store
                .list_agents(Some(&self.config.group))
                .await?
                .into_iter()
                .filter(|a| a.is_live(self.config.agent_ttl))
                .map(|a| KnownAgent {
                    id: a.agent_id,
                    address: a.address,
                    zone: a.zone,
                    failed_until: None,
                })
                .collect(),
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

    /// Calls the first bootstrap or known agent that answers.
    async fn any_agent_call<T, F, Fut>(&self, bootstrap: &[String], call: F) -> Result<T>
    where
        F: Fn(StreamHouseClient<Channel>) -> Fut,
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
                    "none registered with a heartbeat in the last {:?}; start one with `streamhouse agent --group {}`",
                    self.config.agent_ttl, self.config.group
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
            Source::Metadata(store) => store.get_topic(topic).await?.map(|t| t.partition_count),
            Source::Bootstrap(_) => {
                let conn = self.agent().await?;
                let request = pb::MetadataRequest {
                    topics: vec![topic.to_string()],
                    ..Default::default()
                };
                let mut client = conn.client.clone();
                let response = client.get_metadata(request).await.map_err(|status| {
                    self.report_failure(&conn.id);
                    Error::Rpc {
                        address: conn.address.clone(),
                        status: Arc::new(status),
                    }
                })?;
                response
                    .into_inner()
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
        F: Fn(StreamHouseClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let bootstrap = match &self.source {
            Source::Bootstrap(b) => b.clone(),
            Source::Metadata(_) => Vec::new(),
        };
        self.any_agent_call(&bootstrap, call).await
    }

    /// Runs `call` on an agent, failing over to other agents on transport
    /// errors, up to `attempts` agents.
    pub async fn call<T, F, Fut>(&self, attempts: u32, call: F) -> Result<T>
    where
        F: Fn(StreamHouseClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = None;
        for _ in 0..attempts.max(1) {
            let conn = self.agent().await?;
            match call(conn.client.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) => {
                    let e = Error::Rpc {
                        address: conn.address.clone(),
                        status: Arc::new(status),
                    };
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    self.report_failure(&conn.id);
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }
}
