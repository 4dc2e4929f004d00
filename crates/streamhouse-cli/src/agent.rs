//! `streamhouse agent`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use streamhouse_agent::{AgentConfig, AuthConfig, JobsConfig, RequestLimits, TlsFiles};
use streamhouse_storage::{PipelineConfig, ReaderConfig, S3Options};

use crate::BoxError;

/// Run an agent: a stateless gRPC and Kafka protocol server that writes to
/// object storage and commits offsets in the metadata store. With no flags it uses the
/// embedded defaults under ./streamhouse-data. SIGINT or SIGTERM shuts it
/// down gracefully (in-flight requests finish, buffered records are
/// committed).
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "STREAMHOUSE_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Address clients should connect to, as registered in the metadata
    /// store [default: the listen address].
    #[arg(long, env = "STREAMHOUSE_ADVERTISE")]
    advertise: Option<String>,
    /// Metadata store: sqlite://PATH or postgres://USER@HOST:PORT/DB.
    #[arg(
        long,
        env = "STREAMHOUSE_METADATA",
        hide_env_values = true,
        default_value = "sqlite://streamhouse-data/metadata.db"
    )]
    metadata: String,
    /// Object store: file://DIR, s3://BUCKET[/PREFIX] or memory://.
    #[arg(
        long,
        env = "STREAMHOUSE_STORAGE",
        hide_env_values = true,
        default_value = "file://streamhouse-data/objects"
    )]
    storage: String,
    /// S3 endpoint for S3-compatible servers [default: AWS_ENDPOINT_URL, else AWS].
    #[arg(long, env = "STREAMHOUSE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region [default: AWS_REGION].
    #[arg(long, env = "STREAMHOUSE_S3_REGION")]
    s3_region: Option<String>,
    /// Allow plain-HTTP S3 endpoints [default: on for an http:// --s3-endpoint, else AWS_ALLOW_HTTP].
    #[arg(long, env = "STREAMHOUSE_S3_ALLOW_HTTP")]
    s3_allow_http: bool,
    /// Agent id [default: a new ULID].
    #[arg(long, env = "STREAMHOUSE_AGENT_ID")]
    agent_id: Option<String>,
    /// Agent group; clients pick agents by group.
    #[arg(long, env = "STREAMHOUSE_GROUP", default_value = "default")]
    group: String,
    /// Availability zone, for clients that prefer their own zone.
    #[arg(long, env = "STREAMHOUSE_ZONE")]
    zone: Option<String>,
    /// Milliseconds the first batch waits for others to join its flush when
    /// no flush is running; under load batches gather while earlier
    /// flushes upload and commit (group commit), whatever this is.
    #[arg(long, env = "STREAMHOUSE_LINGER_MS", default_value_t = 0)]
    linger_ms: u64,
    /// Buffered bytes that start a flush at once.
    #[arg(long, env = "STREAMHOUSE_FLUSH_BYTES", default_value_t = 8 << 20)]
    flush_bytes: usize,
    /// Most bytes buffered or being written before producers wait.
    #[arg(long, env = "STREAMHOUSE_MAX_BUFFERED_BYTES", default_value_t = 64 << 20)]
    max_buffered_bytes: usize,
    /// Largest record batch accepted.
    #[arg(long, env = "STREAMHOUSE_MAX_BATCH_BYTES", default_value_t = 8 << 20)]
    max_batch_bytes: usize,
    /// Largest request accepted.
    #[arg(long, env = "STREAMHOUSE_MAX_REQUEST_BYTES", default_value_t = 64 << 20)]
    max_request_bytes: usize,
    /// Most partitions one produce or fetch request may name.
    #[arg(
        long,
        env = "STREAMHOUSE_MAX_PARTITIONS_PER_REQUEST",
        default_value_t = 10_000
    )]
    max_partitions_per_request: usize,
    /// Longest a fetch may wait for new records, in milliseconds.
    #[arg(long, env = "STREAMHOUSE_MAX_FETCH_WAIT_MS", default_value_t = 30_000)]
    max_fetch_wait_ms: u64,
    /// Largest fetch response.
    #[arg(long, env = "STREAMHOUSE_MAX_FETCH_BYTES", default_value_t = 64 << 20)]
    max_fetch_bytes: usize,
    /// Bytes of object blocks cached for reads.
    #[arg(long, env = "STREAMHOUSE_READ_CACHE_BYTES", default_value_t = 1 << 30)]
    read_cache_bytes: usize,
    /// How often consumer group members heartbeat, in milliseconds.
    #[arg(long, env = "STREAMHOUSE_GROUP_HEARTBEAT_MS", default_value_t = 500)]
    group_heartbeat_ms: u64,
    /// Serve Prometheus metrics on this address (GET /metrics) [default: off].
    #[arg(long, env = "STREAMHOUSE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// NOT DURABLE: skip fsync of SQLite commits and file:// objects. Faster,
    /// but a power loss can lose acknowledged records. For tests only.
    #[arg(long, env = "STREAMHOUSE_UNSAFE_NO_FSYNC")]
    unsafe_no_fsync: bool,
    /// How often retention runs, in seconds.
    #[arg(long, env = "STREAMHOUSE_RETENTION_INTERVAL_S", default_value_t = 60)]
    retention_interval_s: u64,
    /// How often the object GC runs, in seconds.
    #[arg(long, env = "STREAMHOUSE_GC_INTERVAL_S", default_value_t = 300)]
    gc_interval_s: u64,
    /// Objects younger than this many seconds are never collected.
    #[arg(long, env = "STREAMHOUSE_GC_GRACE_S", default_value_t = 3600)]
    gc_grace_s: u64,
    /// How often small segments are merged, in seconds.
    #[arg(long, env = "STREAMHOUSE_COMPACTION_INTERVAL_S", default_value_t = 60)]
    compaction_interval_s: u64,
    /// Size merged objects aim for, in bytes.
    #[arg(long, env = "STREAMHOUSE_COMPACTION_TARGET_BYTES", default_value_t = 64 << 20)]
    compaction_target_bytes: u64,
    /// How often cleanup.policy=compact topics are compacted by key, in seconds.
    #[arg(
        long,
        env = "STREAMHOUSE_KEY_COMPACTION_INTERVAL_S",
        default_value_t = 600
    )]
    key_compaction_interval_s: u64,
    /// How often open transactions are checked against their timeout, in
    /// milliseconds.
    #[arg(long, env = "STREAMHOUSE_TRANSACTION_CHECK_MS", default_value_t = 1000)]
    transaction_check_ms: u64,
    /// Heartbeat interval, in milliseconds.
    #[arg(long, env = "STREAMHOUSE_HEARTBEAT_MS", default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Address of the Kafka protocol listener (port 0 picks a free port),
    /// or `off`.
    #[arg(
        long,
        env = "STREAMHOUSE_KAFKA_LISTEN",
        default_value = "127.0.0.1:9092"
    )]
    kafka_listen: KafkaListen,
    /// Address Kafka clients should connect to, as given to them in
    /// Metadata answers [default: the Kafka listen address].
    #[arg(long, env = "STREAMHOUSE_KAFKA_ADVERTISE")]
    kafka_advertise: Option<String>,
    /// Create topics that Kafka clients ask metadata for and that do not
    /// exist, when the client allows it (true or false).
    #[arg(
        long,
        env = "STREAMHOUSE_KAFKA_AUTO_CREATE_TOPICS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    kafka_auto_create_topics: bool,
    /// Partitions of topics created that way.
    #[arg(
        long,
        env = "STREAMHOUSE_KAFKA_DEFAULT_PARTITIONS",
        default_value_t = 1
    )]
    kafka_default_partitions: u32,
    /// A Kafka consumer group member (group.protocol=consumer) that misses
    /// heartbeats this long, in milliseconds, leaves its group.
    #[arg(
        long,
        env = "STREAMHOUSE_KAFKA_GROUP_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    kafka_group_session_timeout_ms: u64,
    /// Milliseconds the first join phase of a Kafka classic group without
    /// members waits for more members (and as long again for each one
    /// that joins meanwhile, up to the rebalance timeout), as Kafka's
    /// group.initial.rebalance.delay.ms; 0 answers at once.
    #[arg(
        long,
        env = "STREAMHOUSE_KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3_000
    )]
    kafka_group_initial_rebalance_delay_ms: u64,
    /// PEM certificate chain: serve TLS on the gRPC, Kafka and metrics
    /// listeners (re-read on SIGHUP or when the file changes).
    #[arg(long, env = "STREAMHOUSE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STREAMHOUSE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates of client certificates (mutual TLS): a client
    /// presenting one is authenticated as User:CN (its common name).
    #[arg(long, env = "STREAMHOUSE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Require every client to authenticate (Kafka SASL SCRAM or PLAIN,
    /// gRPC user name and password, or a client certificate) and enforce
    /// ACLs. Users: `streamhouse users`; ACLs: `streamhouse acl`.
    #[arg(long, env = "STREAMHOUSE_REQUIRE_AUTH")]
    require_auth: bool,
    /// Principals allowed everything, whatever the ACLs (comma-separated,
    /// e.g. User:admin).
    #[arg(long, env = "STREAMHOUSE_SUPER_USERS", value_delimiter = ',')]
    super_users: Vec<String>,
    /// Accept passwords (SASL PLAIN, gRPC credentials) on connections
    /// without TLS. SCRAM never sends the password.
    #[arg(long, env = "STREAMHOUSE_ALLOW_PLAINTEXT_PASSWORDS")]
    allow_plaintext_passwords: bool,
    /// Listen beyond loopback without --require-auth (anyone who can reach
    /// the agent may then do anything).
    #[arg(long, env = "STREAMHOUSE_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,
}

/// `--kafka-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug)]
struct KafkaListen(Option<SocketAddr>);

impl std::str::FromStr for KafkaListen {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(KafkaListen(None));
        }
        s.parse().map(|a| KafkaListen(Some(a)))
    }
}

impl Args {
    pub fn config(&self) -> AgentConfig {
        AgentConfig {
            listen: self.listen,
            advertised_address: self.advertise.clone(),
            metadata_url: self.metadata.clone(),
            storage_url: self.storage.clone(),
            s3: S3Options {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                allow_http: (self.s3_allow_http
                    || self
                        .s3_endpoint
                        .as_ref()
                        .is_some_and(|e| e.starts_with("http://")))
                .then_some(true),
                ..S3Options::default()
            },
            agent_id: self.agent_id.clone(),
            group: self.group.clone(),
            zone: self.zone.clone(),
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms.max(1)),
            agent_ttl: Duration::from_millis(self.heartbeat_ms.max(1) * 10),
            group_heartbeat_interval: Duration::from_millis(self.group_heartbeat_ms.max(1)),
            transaction_check_interval: Duration::from_millis(self.transaction_check_ms.max(1)),
            pipeline: PipelineConfig {
                linger: Duration::from_millis(self.linger_ms),
                flush_bytes: self.flush_bytes,
                max_buffered_bytes: self.max_buffered_bytes,
                max_batch_bytes: self.max_batch_bytes,
                ..PipelineConfig::default()
            },
            reader: ReaderConfig {
                cache_bytes: self.read_cache_bytes,
                ..ReaderConfig::default()
            },
            metrics_listen: self.metrics_listen,
            unsafe_no_fsync: self.unsafe_no_fsync,
            kafka_listen: self.kafka_listen.0,
            kafka_advertise: self.kafka_advertise.clone(),
            kafka_auto_create_topics: self.kafka_auto_create_topics,
            kafka_default_partitions: self.kafka_default_partitions,
            kafka_group_session_timeout: Duration::from_millis(
                self.kafka_group_session_timeout_ms.max(1),
            ),
            kafka_group_initial_rebalance_delay: Duration::from_millis(
                self.kafka_group_initial_rebalance_delay_ms,
            ),
            jobs: JobsConfig {
                retention_interval: Duration::from_secs(self.retention_interval_s.max(1)),
                gc_interval: Duration::from_secs(self.gc_interval_s.max(1)),
                gc_grace: Duration::from_secs(self.gc_grace_s),
                compaction_interval: Duration::from_secs(self.compaction_interval_s.max(1)),
                compaction_target_bytes: self.compaction_target_bytes,
                key_compaction_interval: Duration::from_secs(self.key_compaction_interval_s.max(1)),
                ..JobsConfig::default()
            },
            limits: RequestLimits {
                max_request_bytes: self.max_request_bytes,
                max_batch_bytes: self.max_batch_bytes,
                max_partitions_per_request: self.max_partitions_per_request,
                max_fetch_wait: Duration::from_millis(self.max_fetch_wait_ms),
                max_fetch_bytes: self.max_fetch_bytes,
            },
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            auth: AuthConfig {
                required: self.require_auth,
                super_users: self.super_users.clone(),
                allow_plaintext_passwords: self.allow_plaintext_passwords,
                allow_unauthenticated: self.allow_unauthenticated,
            },
        }
    }
}

pub async fn run(args: Args) -> Result<(), BoxError> {
    streamhouse_agent::run(args.config(), shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: super::Args,
    }

    fn allow_http(argv: &[&str]) -> Option<bool> {
        let argv = std::iter::once("agent").chain(argv.iter().copied());
        Command::try_parse_from(argv)
            .expect("valid arguments")
            .args
            .config()
            .s3
            .allow_http
    }

    #[test]
    fn the_agent_is_durable_unless_told_otherwise() {
        let config = |argv: &[&str]| {
            let argv = std::iter::once("agent").chain(argv.iter().copied());
            Command::try_parse_from(argv)
                .expect("valid arguments")
                .args
                .config()
        };
        assert!(!config(&[]).unsafe_no_fsync);
        assert!(config(&["--unsafe-no-fsync"]).unsafe_no_fsync);
    }

    #[test]
    fn s3_allow_http_is_a_switch() {
        assert_eq!(allow_http(&["--s3-allow-http"]), Some(true));
        assert!(
            Command::try_parse_from(["agent", "--s3-allow-http", "true"]).is_err(),
            "the switch takes no value"
        );
        assert_eq!(
            allow_http(&["--s3-endpoint", "http://127.0.0.1:9000"]),
            Some(true)
        );
        // Left to AWS_ALLOW_HTTP.
        assert_eq!(allow_http(&["--s3-endpoint", "https://s3.example"]), None);
        assert_eq!(allow_http(&[]), None);
    }

    #[test]
    fn kafka_flags() {
        let config = |argv: &[&str]| {
            let argv = std::iter::once("agent").chain(argv.iter().copied());
            Command::try_parse_from(argv)
                .expect("valid arguments")
                .args
                .config()
        };
        let c = config(&[]);
        assert_eq!(c.kafka_listen, Some("127.0.0.1:9092".parse().unwrap()));
        assert!(c.kafka_auto_create_topics);
        assert_eq!(c.kafka_default_partitions, 1);
        assert_eq!(config(&["--kafka-listen", "off"]).kafka_listen, None);
        let c = config(&[
            "--kafka-listen",
            "0.0.0.0:19092",
            "--kafka-advertise",
            "agent-1.internal:19092",
            "--kafka-auto-create-topics",
            "false",
            "--kafka-default-partitions",
            "6",
        ]);
        assert_eq!(c.kafka_listen, Some("0.0.0.0:19092".parse().unwrap()));
        assert_eq!(c.kafka_advertise.as_deref(), Some("agent-1.internal:19092"));
        assert!(!c.kafka_auto_create_topics);
        assert_eq!(c.kafka_default_partitions, 6);
        assert!(
            Command::try_parse_from(["agent", "--kafka-listen", "nowhere"]).is_err(),
            "not an address"
        );
    }
}
