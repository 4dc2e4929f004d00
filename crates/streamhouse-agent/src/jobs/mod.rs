//! Background jobs, run by whichever agent holds the job's lease in the
//! metadata store: retention, object GC (`gc.rs`), compaction of small
//! segments into per-partition objects (`compaction.rs`), and key-based
//! log compaction (`key_compaction.rs`).

mod compaction;
mod gc;
mod key_compaction;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::ObjectStore;
use streamhouse_metadata::{MetadataStore, RETENTION_BYTES};
use streamhouse_storage::Reader;

use key_compaction::CleanedPartitions;

/// Intervals and limits of the background jobs.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// How often retention runs. Default 60 s.
    pub retention_interval: Duration,
    /// How often the object GC runs. Default 5 min.
    pub gc_interval: Duration,
    /// Objects younger than this are not collected, so a commit that is
    /// merely slow is not failed. (A commit of any age never references a
    /// deleted object: the GC claims a key in the metadata store before
    /// deleting it, and a commit of a claimed key fails.) Default 1 h.
    pub gc_grace: Duration,
    /// How often small segments are merged. Default 60 s.
    pub compaction_interval: Duration,
    /// Size merged objects aim for; segments under half of it are merged.
    /// Default 64 MiB.
    pub compaction_target_bytes: u64,
    /// How often topics with `cleanup.policy=compact` are compacted by key.
    /// Default 10 min.
    pub key_compaction_interval: Duration,
    /// Most memory (key bytes plus a fixed cost per key) the key map of one
    /// partition's compaction takes; new data beyond it is compacted by the
    /// next runs. Default 64 MiB.
    pub key_compaction_map_bytes: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            retention_interval: Duration::from_secs(60),
            gc_interval: Duration::from_secs(300),
            gc_grace: Duration::from_secs(3600),
            compaction_interval: Duration::from_secs(60),
            compaction_target_bytes: 64 << 20,
            key_compaction_interval: Duration::from_secs(600),
            key_compaction_map_bytes: 64 << 20,
        }
    }
}

/// Why a job run failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    #[error(transparent)]
    Metadata(#[from] streamhouse_metadata::Error),
    #[error(transparent)]
    Storage(#[from] streamhouse_storage::Error),
    #[error(transparent)]
    Batch(#[from] streamhouse_core::Error),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
}

/// The background jobs of one agent, with what they remember between runs.
pub(crate) struct Jobs {
    metadata: Arc<dyn MetadataStore>,
    store: Arc<dyn ObjectStore>,
    reader: Arc<Reader>,
    holder: String,
    config: JobsConfig,
    /// How far key compaction has cleaned each partition.
    cleaned: CleanedPartitions,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Jobs {
    /// Jobs of the agent `holder` (the name its leases are taken under).
    pub(crate) fn new(
        metadata: Arc<dyn MetadataStore>,
        store: Arc<dyn ObjectStore>,
        reader: Arc<Reader>,
        holder: String,
        config: JobsConfig,
    ) -> Self {
        Jobs {
            metadata,
            store,
            reader,
            holder,
            config,
            cleaned: CleanedPartitions::default(),
        }
    }

    /// Runs `job` every `every` while this agent holds its lease.
    pub(crate) async fn run(self: Arc<Self>, job: &'static str, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The lease outlives a tick, so its holder keeps it while alive.
        let ttl = (every.as_millis() as i64).saturating_mul(3).max(1000);
        loop {
            tick.tick().await;
            match self.metadata.try_lease(job, &self.holder, ttl).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(job, error = %e, "taking the job lease failed");
                    continue;
                }
            }
            let result = match job {
                "retention" => self.retention().await,
                "object-gc" => self.object_gc().await,
                "compaction" => self.compaction().await,
                "key-compaction" => self.key_compaction().await,
                other => unreachable!("unknown job {other}"),
            };
            let outcome = match &result {
                Ok(done) => {
                    if *done > 0 {
                        tracing::info!(job, done, "job run");
                    }
                    "ok"
                }
                Err(e) => {
                    tracing::warn!(job, error = %e, "job run failed");
                    "error"
                }
            };
            metrics::counter!("streamhouse_job_runs_total", "job" => job, "result" => outcome)
                .increment(1);
        }
    }

    /// Drops segments past each topic's retention; returns segments dropped.
    pub(crate) async fn retention(&self) -> Result<u64, JobError> {
        let mut dropped = 0;
        for t in self.metadata.list_topics().await? {
            let bytes = t
                .config
                .get(RETENTION_BYTES)
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|&b| b > 0);
            let min_timestamp = t.retention_ms.map(|r| now_ms() - r);
            if bytes.is_none() && min_timestamp.is_none() {
                continue;
            }
            for p in 0..t.partition_count {
                let (n, start) = self
                    .metadata
                    .apply_retention(t.id, p, min_timestamp, bytes)
                    .await?;
                if n > 0 {
                    tracing::debug!(topic = %t.name, partition = p, segments = n, log_start = start, "retention");
                }
                dropped += n;
            }
        }
        Ok(dropped)
    }
}

/// Milliseconds since the epoch `grace` ago.
fn cutoff_ms(grace: Duration) -> i64 {
    now_ms() - grace.as_millis() as i64
}
