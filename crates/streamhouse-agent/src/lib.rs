//! The StreamHouse agent: a stateless gRPC server. Any agent accepts writes
//! for any partition, batches them into one object per flush, and commits
//! offsets in the metadata store; any agent serves reads of any partition.
//!
//! ```text
//! clients ──gRPC──▶ Service ──▶ WritePipeline ──PUT──▶ object store
//!                      │              └──commit──▶ metadata store
//!                      └──────▶ Reader ◀──range GET── object store
//! ```
//!
//! [`Agent::start`] binds (port 0 picks a free port), registers the agent
//! and heartbeats; [`RunningAgent::shutdown`] stops accepting requests,
//! finishes those in flight, flushes and commits everything buffered, and
//! deregisters. A producer is acknowledged only after its batch is committed,
//! so neither a shutdown nor a crash loses an acknowledged record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_store::ObjectStore;
use streamhouse_metadata::{AgentRegistration, MetadataStore};
use streamhouse_proto::stream_house_server::StreamHouseServer;
use streamhouse_storage::{PipelineConfig, Reader, ReaderConfig, S3Options, WritePipeline};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod auth;
mod connections;
mod error;
mod fetch;
mod jobs;
mod kafka;
mod metrics_http;
mod produce;
mod service;
mod tls;
mod transactions;

pub use auth::AuthConfig;
pub use error::{Error, Result};
pub use jobs::JobsConfig;
pub use service::RequestLimits;
pub use tls::TlsFiles;

/// Everything an agent needs to run. [`Default`] is the embedded setup.
/// Its `Debug` output hides the metadata and storage URLs' passwords.
#[derive(Clone)]
pub struct AgentConfig {
    /// Address to listen on. Default `127.0.0.1:50051`; port 0 picks one.
    pub listen: SocketAddr,
    /// Address clients should use, registered in the metadata store.
    /// Default: the bound address.
    pub advertised_address: Option<String>,
    /// Metadata store URL. Default `sqlite://streamhouse-data/metadata.db`.
    pub metadata_url: String,
    /// Object store URL. Default `file://streamhouse-data/objects`.
    pub storage_url: String,
    /// S3 settings for `s3://` storage URLs.
    pub s3: S3Options,
    /// Agent id. Default: a new ULID per start.
    pub agent_id: Option<String>,
    /// Agent group clients select agents by. Default `default`.
    pub group: String,
    /// Availability zone, for clients that prefer their own zone.
    pub zone: Option<String>,
    /// How often the agent heartbeats. Default 1 s.
    pub heartbeat_interval: Duration,
    /// Agents whose heartbeat is older than this are not listed to clients.
    /// Default 10 s.
    pub agent_ttl: Duration,
    /// How often consumer group members are told to heartbeat. Default
    /// 500 ms.
    pub group_heartbeat_interval: Duration,
    /// How often open transactions are checked against their timeout.
    /// Default 1 s.
    pub transaction_check_interval: Duration,
    pub pipeline: PipelineConfig,
    pub reader: ReaderConfig,
    pub limits: RequestLimits,
    pub jobs: JobsConfig,
    /// Serve Prometheus metrics on this address (`/metrics`). Default: off.
    pub metrics_listen: Option<SocketAddr>,
    /// Skip fsync in the embedded stores (SQLite commits and `file://`
    /// objects): faster, but a power loss can lose acknowledged records.
    /// PostgreSQL and S3 are unaffected. Default: false (durable).
    pub unsafe_no_fsync: bool,
    /// Address of the Kafka protocol listener; port 0 picks one. Default:
    /// off (`streamhouse agent` listens on 127.0.0.1:9092).
    pub kafka_listen: Option<SocketAddr>,
    /// `host:port` Kafka clients are told to connect to. Default: the bound
    /// Kafka address.
    pub kafka_advertise: Option<String>,
    /// Create a topic a Kafka Metadata request names when it does not exist
    /// and the client allows it. Default: true.
    pub kafka_auto_create_topics: bool,
    /// Partitions of a topic created that way. Default: 1.
    pub kafka_default_partitions: u32,
    /// A Kafka consumer group member (`group.protocol=consumer`) that misses
    /// heartbeats this long leaves its group, as Kafka's
    /// `group.consumer.session.timeout.ms`. Default: 45 s.
    pub kafka_group_session_timeout: Duration,
    /// How long the first join phase of a Kafka classic group without
    /// members waits for more members, and again for each one that joins
    /// meanwhile, up to the rebalance timeout, as Kafka's
    /// `group.initial.rebalance.delay.ms`: consumers starting together get
    /// one generation between them. Default: 3 s.
    pub kafka_group_initial_rebalance_delay: Duration,
    /// TLS on every listener (gRPC, Kafka, metrics). Default: off.
    pub tls: Option<TlsFiles>,
    /// Authentication and ACLs. Default: off, which only loopback
    /// listeners allow (see [`AuthConfig::allow_unauthenticated`]).
    pub auth: AuthConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            advertised_address: None,
            metadata_url: "sqlite://streamhouse-data/metadata.db".into(),
            storage_url: "file://streamhouse-data/objects".into(),
            s3: S3Options::default(),
            agent_id: None,
            group: "default".into(),
            zone: None,
            heartbeat_interval: Duration::from_secs(1),
            agent_ttl: Duration::from_secs(10),
            group_heartbeat_interval: Duration::from_millis(500),
            transaction_check_interval: Duration::from_secs(1),
            pipeline: PipelineConfig::default(),
            reader: ReaderConfig::default(),
            limits: RequestLimits::default(),
            jobs: JobsConfig::default(),
            metrics_listen: None,
            unsafe_no_fsync: false,
            kafka_listen: None,
            kafka_advertise: None,
            kafka_auto_create_topics: true,
            kafka_default_partitions: 1,
            kafka_group_session_timeout: Duration::from_secs(45),
            kafka_group_initial_rebalance_delay: Duration::from_secs(3),
            tls: None,
            auth: AuthConfig::default(),
        }
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use streamhouse_core::names::redact_url;
        f.debug_struct("AgentConfig")
            .field("listen", &self.listen)
            .field("advertised_address", &self.advertised_address)
            .field("metadata_url", &redact_url(&self.metadata_url))
            .field("storage_url", &redact_url(&self.storage_url))
            .field("s3", &self.s3)
            .field("agent_id", &self.agent_id)
            .field("group", &self.group)
            .field("zone", &self.zone)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("agent_ttl", &self.agent_ttl)
            .field("group_heartbeat_interval", &self.group_heartbeat_interval)
            .field(
                "transaction_check_interval",
                &self.transaction_check_interval,
            )
            .field("pipeline", &self.pipeline)
            .field("reader", &self.reader)
            .field("limits", &self.limits)
            .field("jobs", &self.jobs)
            .field("metrics_listen", &self.metrics_listen)
            .field("unsafe_no_fsync", &self.unsafe_no_fsync)
            .field("kafka_listen", &self.kafka_listen)
            .field("kafka_advertise", &self.kafka_advertise)
            .field("kafka_auto_create_topics", &self.kafka_auto_create_topics)
            .field("kafka_default_partitions", &self.kafka_default_partitions)
            .field(
                "kafka_group_session_timeout",
                &self.kafka_group_session_timeout,
            )
            .field(
                "kafka_group_initial_rebalance_delay",
                &self.kafka_group_initial_rebalance_delay,
            )
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Builds and starts agents.
pub struct Agent;

/// A started agent.
pub struct RunningAgent {
    addr: SocketAddr,
    kafka_addr: Option<SocketAddr>,
    agent_id: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

impl Agent {
    /// Opens the stores named by `config` and starts the agent.
    pub async fn start(config: AgentConfig) -> Result<RunningAgent> {
        let (metadata, store) = if config.unsafe_no_fsync {
            (
                streamhouse_metadata::open_without_fsync(&config.metadata_url).await?,
                streamhouse_storage::open_object_store_without_fsync(
                    &config.storage_url,
                    &config.s3,
                )?,
            )
        } else {
            (
                streamhouse_metadata::open(&config.metadata_url).await?,
                streamhouse_storage::open_object_store(&config.storage_url, &config.s3)?,
            )
        };
        Self::start_with(config, metadata, store).await
    }

    /// Starts an agent on stores already opened (the URLs in `config` are
    /// not used). Every object store request is counted in the agent's
    /// metrics (see [`MeteredStore`](streamhouse_storage::MeteredStore)).
    pub async fn start_with(
        config: AgentConfig,
        metadata: Arc<dyn MetadataStore>,
        store: Arc<dyn ObjectStore>,
    ) -> Result<RunningAgent> {
        if config.group.is_empty() {
            return Err(Error::Config("agent group must not be empty".into()));
        }
        refuse_open_exposure(&config)?;
        let store: Arc<dyn ObjectStore> = streamhouse_storage::MeteredStore::new(store);
        let mut pipeline_config = config.pipeline.clone();
        pipeline_config.max_batch_bytes = config.limits.max_batch_bytes;
        if pipeline_config.max_buffered_bytes < pipeline_config.max_batch_bytes {
            pipeline_config.max_buffered_bytes = pipeline_config.max_batch_bytes;
        }
        let pipeline = Arc::new(WritePipeline::new(
            store.clone(),
            metadata.clone(),
            pipeline_config,
        )?);
        let reader = Arc::new(Reader::new(
            store.clone(),
            metadata.clone(),
            Some(pipeline.recent_objects()),
            config.reader.clone(),
        ));
        let reader_for_jobs = reader.clone();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                address: config.listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            address: config.listen.to_string(),
            source,
        })?;
        let agent_id = config
            .agent_id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
        if config.kafka_default_partitions == 0 {
            return Err(Error::Config(
                "the Kafka default partition count must be at least 1".into(),
            ));
        }
        let kafka_listener = match config.kafka_listen {
            None => None,
            Some(listen) => {
                let bind_error = |source| Error::Bind {
                    address: listen.to_string(),
                    source,
                };
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(bind_error)?;
                let bound = listener.local_addr().map_err(bind_error)?;
                Some((listener, bound))
            }
        };
        let kafka_addr = kafka_listener.as_ref().map(|(_, bound)| *bound);
        let tls = config.tls.clone().map(tls::Tls::load).transpose()?;
        let auth = auth::Auth::start(config.auth.clone(), metadata.clone()).await?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(metrics_http::bind(addr).await?),
            None => None,
        };
        metadata
            .register_agent(AgentRegistration {
                agent_id: agent_id.clone(),
                group: config.group.clone(),
                address: config
                    .advertised_address
                    .clone()
                    .unwrap_or_else(|| addr.to_string()),
                zone: config.zone.clone(),
                kafka_address: kafka_addr.map(|bound| {
                    config
                        .kafka_advertise
                        .clone()
                        .unwrap_or_else(|| bound.to_string())
                }),
            })
            .await?;
        let shutting_down = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(connections::Connections::default());
        let service = service::Service {
            agent_id: agent_id.clone(),
            connections: connections.clone(),
            metadata: metadata.clone(),
            pipeline: pipeline.clone(),
            reader,
            limits: config.limits.clone(),
            agent_ttl: config.agent_ttl,
            group_heartbeat_interval: config.group_heartbeat_interval,
            shutting_down: shutting_down.clone(),
            commits: pipeline.commits(),
            store: store.clone(),
            auth: auth.clone(),
            transactional_ids: Default::default(),
        };
        let (kafka_stop, kafka_stopped) = tokio::sync::watch::channel(false);
        let kafka_task = kafka_listener.map(|(listener, _)| {
            let broker = Arc::new(kafka::Broker {
                metadata: metadata.clone(),
                pipeline: pipeline.clone(),
                reader: service.reader.clone(),
                store: service.store.clone(),
                commits: pipeline.commits(),
                limits: config.limits.clone(),
                agent_ttl: config.agent_ttl,
                group: config.group.clone(),
                zone: config.zone.clone(),
                shutting_down: shutting_down.clone(),
                auto_create_topics: config.kafka_auto_create_topics,
                default_partitions: config.kafka_default_partitions,
                connections: connections.clone(),
                group_heartbeat_interval: config.group_heartbeat_interval,
                group_session_timeout: config.kafka_group_session_timeout,
                group_initial_rebalance_delay: config.kafka_group_initial_rebalance_delay,
                auth: auth.clone(),
            });
            tokio::spawn(kafka::serve(listener, tls.clone(), broker, kafka_stopped))
        });
        let server = StreamHouseServer::new(service)
            .max_decoding_message_size(config.limits.max_request_bytes)
            .max_encoding_message_size(config.limits.max_fetch_bytes + (1 << 20));
        let authenticating = auth.clone();
        let server = tonic::service::interceptor::InterceptedService::new(
            server,
            move |mut request: tonic::Request<()>| {
                let session = auth::grpc::session(&authenticating, &request)?;
                request.extensions_mut().insert(session);
                Ok(request)
            },
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let heartbeat = tokio::spawn(heartbeat(
            metadata.clone(),
            agent_id.clone(),
            config.heartbeat_interval,
        ));
        let aborter = tokio::spawn(transactions::abort_expired(
            metadata.clone(),
            store.clone(),
            config.transaction_check_interval,
        ));
        let jobs = Arc::new(jobs::Jobs::new(
            metadata.clone(),
            store,
            reader_for_jobs,
            agent_id.clone(),
            config.jobs.clone(),
        ));
        let mut background = vec![heartbeat, aborter];
        if let Some(listener) = metrics_listener {
            background.push(tokio::spawn(metrics_http::serve(listener, tls.clone())));
        }
        if let Some(tls) = &tls {
            background.push(tokio::spawn(tls.clone().watch()));
        }
        if auth.required() {
            background.push(tokio::spawn(auth.clone().refresh_loop()));
        }
        for (job, every) in [
            ("retention", config.jobs.retention_interval),
            ("object-gc", config.jobs.gc_interval),
            ("compaction", config.jobs.compaction_interval),
            ("key-compaction", config.jobs.key_compaction_interval),
        ] {
            background.push(tokio::spawn(jobs.clone().run(job, every)));
        }
        background.push(tokio::spawn(group_gauges(metadata.clone())));
        tracing::info!(%agent_id, %addr, kafka = ?kafka_addr, group = %config.group, "agent started");
        let id = agent_id.clone();
        let task = tokio::spawn(async move {
            let incoming = grpc_connections(listener, tls, connections);
            let closing = pipeline.clone();
            let mut flushed = None;
            let served = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .add_service(server)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                    // Refuse new requests, and flush and commit everything
                    // buffered now, so in-flight produce requests get their
                    // answers while the server drains.
                    shutting_down.store(true, Ordering::Relaxed);
                    let _ = kafka_stop.send(true);
                    flushed = Some(tokio::spawn(async move { closing.close().await }));
                })
                .await;
            if let Some(flushed) = flushed {
                let _ = flushed.await;
            }
            pipeline.close().await;
            if let Some(kafka) = kafka_task {
                kafka.abort();
            }
            for task in &background {
                task.abort();
            }
            if let Err(e) = metadata.deregister_agent(&id).await {
                tracing::warn!(agent_id = %id, error = %e, "deregistering failed");
            }
            tracing::info!(agent_id = %id, "agent stopped");
            served.map_err(Error::Server)
        });
        Ok(RunningAgent {
            addr,
            kafka_addr,
            agent_id,
            stop: Some(stop),
            task,
        })
    }
}

/// Refuses to listen beyond loopback without authentication, unless told
/// to (see [`AuthConfig::allow_unauthenticated`]).
fn refuse_open_exposure(config: &AgentConfig) -> Result<()> {
    if !config.auth.required {
        // Settings that only mean something when clients authenticate.
        for (set, flag) in [
            (!config.auth.super_users.is_empty(), "--super-users"),
            (
                config.auth.allow_plaintext_passwords,
                "--allow-plaintext-passwords",
            ),
        ] {
            if set {
                return Err(Error::Config(format!(
                    "{flag} needs --require-auth: without it no client authenticates"
                )));
            }
        }
    }
    if config.auth.required || config.auth.allow_unauthenticated {
        return Ok(());
    }
    for (listener, addr) in [
        ("gRPC", Some(config.listen)),
        ("Kafka", config.kafka_listen),
    ] {
        if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
            return Err(Error::Config(format!(
                "the {listener} listener would listen on {addr}, beyond loopback, without \
                 authentication: anyone who can reach it could read, write and delete every \
                 topic. Require authentication (--require-auth, with users made by \
                 `streamhouse users create`), or pass --allow-unauthenticated to run it open"
            )));
        }
    }
    Ok(())
}

/// The gRPC listener's connections, past their TLS handshake when TLS is
/// on, each counted while tonic serves it.
fn grpc_connections(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tls::Tls>>,
    connections: Arc<connections::Connections>,
) -> impl futures::Stream<Item = std::io::Result<connections::CountedStream>> {
    let (ready, accepted) = tokio::sync::mpsc::channel(64);
    let accepting = tokio::spawn(tls::accept_loop(listener, tls, tls::Listener::Grpc, ready));
    let accepting = AbortOnDrop(accepting);
    futures::stream::unfold((accepted, accepting), move |(mut accepted, accepting)| {
        let connections = connections.clone();
        async move {
            let (stream, info) = accepted.recv().await?;
            let conn = connections::CountedStream::new(stream, info, connections);
            Some((Ok(conn), (accepted, accepting)))
        }
    })
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Publishes group, member and consumer lag gauges every 10 s.
async fn group_gauges(metadata: Arc<dyn MetadataStore>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let Ok(groups) = metadata.list_groups().await else {
            continue;
        };
        metrics::gauge!("streamhouse_groups").set(groups.len() as f64);
        for (group, members) in groups {
            metrics::gauge!("streamhouse_group_members", "group" => group.clone())
                .set(members as f64);
            let Ok(offsets) = metadata.fetch_offsets(&group).await else {
                continue;
            };
            for o in offsets {
                let Ok(Some(topic)) = metadata.get_topic(&o.topic).await else {
                    continue;
                };
                if let Ok(state) = metadata.partition_state(topic.id, o.partition).await {
                    metrics::gauge!(
                        "streamhouse_consumer_lag",
                        "group" => group.clone(),
                        "topic" => o.topic.clone(),
                        "partition" => o.partition.to_string()
                    )
                    .set((state.next_offset - o.offset).max(0) as f64);
                }
            }
        }
    }
}

async fn heartbeat(metadata: Arc<dyn MetadataStore>, agent_id: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = metadata.heartbeat_agent(&agent_id).await {
            tracing::warn!(%agent_id, error = %e, "heartbeat failed");
        }
    }
}

impl RunningAgent {
    /// The address the agent listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the Kafka listener is bound to, if it is on.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka_addr
    }

    /// The agent's id in the metadata store.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// Stops accepting requests, finishes those in flight, flushes and
    /// commits everything buffered, deregisters, and returns. Dropping a
    /// `RunningAgent` starts the same shutdown without waiting for it.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .unwrap_or_else(|e| Err(Error::Config(format!("agent task failed: {e}"))))
    }
}

/// Starts an agent and runs it until `shutdown` resolves, then shuts it
/// down gracefully. This is what `streamhouse agent` runs.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let agent = Agent::start(config).await?;
    // One line that ends with the gRPC address: scripts read it, and may
    // stop reading after it.
    let kafka = agent
        .kafka_addr()
        .map(|k| format!(", Kafka on {k},"))
        .unwrap_or_default();
    println!(
        "streamhouse agent {}{kafka} listening on {}",
        agent.agent_id(),
        agent.local_addr()
    );
    shutdown.await;
    tracing::info!("shutting down: finishing requests and flushing");
    agent.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_of_authentication_need_it_on() {
        let mut config = AgentConfig::default();
        assert!(refuse_open_exposure(&config).is_ok());
        config.auth.super_users = vec!["User:admin".into()];
        let e = refuse_open_exposure(&config).unwrap_err().to_string();
        assert!(e.contains("--super-users needs --require-auth"), "{e}");
        config.auth.super_users.clear();
        config.auth.allow_plaintext_passwords = true;
        let e = refuse_open_exposure(&config).unwrap_err().to_string();
        assert!(e.contains("--allow-plaintext-passwords"), "{e}");
        config.auth.required = true;
        config.auth.super_users = vec!["User:admin".into()];
        assert!(refuse_open_exposure(&config).is_ok());
    }
}
