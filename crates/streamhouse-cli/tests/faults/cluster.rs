//! A cluster of agent processes on shared stores: SQLite and a local
//! directory, or a private PostgreSQL and the S3 server (moto) behind a
//! fault proxy. The final reads go to the stores directly.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;
use streamhouse_core::RecordBatch;
use streamhouse_storage::{Reader, ReaderConfig, S3Options, open_object_store};

use crate::history::{LogBatch, PartitionLog, Tp};
use crate::postgres::PrivatePostgres;
use crate::processes::{Agent, Stores};
use crate::profile::Figures;
use crate::proxy::Proxy;

pub struct Cluster {
    pub agents: Vec<Agent>,
    /// In front of the S3 server, when the objects are in S3.
    pub s3_proxy: Option<Proxy>,
    pub postgres: Option<PrivatePostgres>,
    metadata_url: String,
    store: Arc<dyn ObjectStore>,
    _dir: tempfile::TempDir,
}

const AGENT_NAMES: [&str; 3] = ["agent0", "agent1", "agent2"];

impl Cluster {
    /// `agents` agents on SQLite and a local directory.
    pub async fn local(agents: usize, seed: u64, figures: &Arc<Figures>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let metadata_url = format!("sqlite://{}", dir.path().join("metadata.db").display());
        let storage = format!("file://{}", dir.path().join("objects").display());
        let store = open_object_store(&storage, &S3Options::default()).unwrap();
        let stores = Stores {
            args: vec![
                "--metadata".into(),
                metadata_url.clone(),
                "--storage".into(),
                storage,
            ],
        };
        Cluster {
            agents: start_agents(agents, seed, &stores, figures).await,
            s3_proxy: None,
            postgres: None,
            metadata_url,
            store,
            _dir: dir,
        }
    }

    /// `agents` agents on a private PostgreSQL and the S3 server named by
    /// `STREAMHOUSE_TEST_S3_ENDPOINT`, reached through a proxy. `None`
    /// (skip) without those services outside CI.
    pub async fn postgres_s3(agents: usize, seed: u64, figures: &Arc<Figures>) -> Option<Cluster> {
        use streamhouse_metadata::testing::service_env;
        let endpoint = service_env("STREAMHOUSE_TEST_S3_ENDPOINT")?;
        let bucket = service_env("STREAMHOUSE_TEST_S3_BUCKET")?;
        let postgres = PrivatePostgres::start()?;
        let s3_proxy = Proxy::start("s3", seed ^ 0x5353, figures.clone()).await;
        let upstream = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("STREAMHOUSE_TEST_S3_ENDPOINT {endpoint:?}: {e}"));
        s3_proxy.set_upstream(upstream);
        let storage = format!("s3://{bucket}/faults-{seed}");
        let store = open_object_store(
            &storage,
            &S3Options {
                endpoint: Some(endpoint.clone()),
                region: Some("us-east-1".into()),
                allow_http: Some(true),
                ..S3Options::default()
            },
        )
        .unwrap();
        let metadata_url = postgres.url();
        let stores = Stores {
            args: vec![
                "--metadata".into(),
                metadata_url.clone(),
                "--storage".into(),
                storage,
                "--s3-endpoint".into(),
                format!("http://{}", s3_proxy.address),
                "--s3-region".into(),
                "us-east-1".into(),
                "--s3-allow-http".into(),
            ],
        };
        Some(Cluster {
            agents: start_agents(agents, seed, &stores, figures).await,
            s3_proxy: Some(s3_proxy),
            postgres: Some(postgres),
            metadata_url,
            store,
            _dir: tempfile::tempdir().unwrap(),
        })
    }

    /// The addresses clients bootstrap from: the agents' proxies.
    pub fn addresses(&self) -> Vec<String> {
        self.agents.iter().map(Agent::address).collect()
    }

    /// An agent's own address, past its proxy (for the final reads).
    pub fn direct(&self) -> String {
        self.agents[0].direct.to_string()
    }

    /// Every batch of every partition of `topic`, read from the stores.
    pub async fn read_logs(&self, topic: &str, partitions: u32) -> BTreeMap<Tp, PartitionLog> {
        let metadata = streamhouse_metadata::open(&self.metadata_url)
            .await
            .expect("opening the metadata store");
        let reader = Reader::new(self.store.clone(), metadata, None, ReaderConfig::default());
        let mut logs = BTreeMap::new();
        for p in 0..partitions {
            let mut log = PartitionLog::default();
            let mut at = 0;
            loop {
                let r = match reader.read(topic, p, at, 1 << 20).await {
                    Ok(r) => r,
                    Err(e) => {
                        log.unreadable = Some((at, error_chain(&e)));
                        break;
                    }
                };
                log.log_start = r.log_start_offset;
                log.high_watermark = r.next_offset;
                if r.batches.is_empty() {
                    break;
                }
                for bytes in r.batches {
                    let batch = RecordBatch::decode(&bytes).expect("a stored batch decodes");
                    let last = batch.base_offset + i64::from(batch.last_offset_delta);
                    let control = batch.attributes.is_control();
                    let records = if control {
                        Vec::new()
                    } else {
                        batch
                            .iter()
                            .map(|(offset, _, rec)| {
                                let v = rec.value.clone().unwrap_or_default();
                                (offset, String::from_utf8_lossy(&v).into_owned())
                            })
                            .collect()
                    };
                    if last >= at {
                        log.batches.push(LogBatch {
                            first: batch.base_offset,
                            last,
                            control,
                            records,
                        });
                    }
                    at = at.max(last + 1);
                }
            }
            logs.insert((topic.to_string(), p), log);
        }
        logs
    }
}

async fn start_agents(n: usize, seed: u64, stores: &Stores, figures: &Arc<Figures>) -> Vec<Agent> {
    let mut agents = Vec::new();
    for (i, name) in AGENT_NAMES.iter().enumerate().take(n) {
        agents.push(Agent::start(name, seed.wrapping_add(i as u64), stores, figures.clone()).await);
    }
    agents
}

/// An error with its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
