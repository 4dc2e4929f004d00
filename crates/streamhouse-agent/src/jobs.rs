//! Background jobs, run by whichever agent holds the job's lease in the
//! metadata store: retention, object GC, compaction of small segments into
//! per-partition objects, and key-based log compaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, path::Path};
use streamhouse_core::{RecordBatch, batches};
use streamhouse_metadata::{
    CLEANUP_POLICY, DELETE_RETENTION_MS, MetadataStore, RETENTION_BYTES, Segment, Topic,
};
use streamhouse_storage::Reader;
use streamhouse_storage::object::ObjectBuilder;

/// Intervals and limits of the background jobs.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// How often retention runs. Default 60 s.
    pub retention_interval: Duration,
    /// How often the object GC runs. Default 5 min.
    pub gc_interval: Duration,
    /// Objects younger than this are never collected: longer than any
    /// upload-to-commit or read can take. Default 1 h.
    pub gc_grace: Duration,
    /// How often small segments are merged. Default 60 s.
    pub compaction_interval: Duration,
    /// Size merged objects aim for; segments under half of it are merged.
    /// Default 64 MiB.
    pub compaction_target_bytes: u64,
    /// How often topics with `cleanup.policy=compact` are compacted by key.
    /// Default 10 min.
    pub key_compaction_interval: Duration,
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

pub(crate) struct Jobs {
    pub metadata: Arc<dyn MetadataStore>,
    pub store: Arc<dyn ObjectStore>,
    pub reader: Arc<Reader>,
    pub holder: String,
    pub config: JobsConfig,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Jobs {
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

    /// Deletes objects older than the grace period that no segment
    /// references; returns objects deleted.
    pub(crate) async fn object_gc(&self) -> Result<u64, JobError> {
        let cutoff = cutoff_ms(self.config.gc_grace);
        let old: Vec<String> = self
            .store
            .list(Some(&Path::from("objects")))
            .try_filter(|m| futures::future::ready(m.last_modified.timestamp_millis() < cutoff))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await?;
        metrics::counter!("streamhouse_object_store_requests_total", "op" => "list", "result" => "ok")
            .increment(1);
        let mut deleted = 0;
        for chunk in old.chunks(500) {
            let referenced: std::collections::HashSet<String> = self
                .metadata
                .referenced_objects(chunk)
                .await?
                .into_iter()
                .collect();
            let garbage: Vec<String> = chunk
                .iter()
                .filter(|k| !referenced.contains(*k))
                .cloned()
                .collect();
            for key in &garbage {
                self.store.delete(&Path::from(key.as_str())).await?;
                metrics::counter!("streamhouse_object_store_requests_total", "op" => "delete", "result" => "ok")
                    .increment(1);
            }
            self.metadata.forget_objects(&garbage).await?;
            deleted += garbage.len() as u64;
        }
        Ok(deleted)
    }

    /// Merges runs of small segments of each partition into one object per
    /// run; returns segments merged away.
    pub(crate) async fn compaction(&self) -> Result<u64, JobError> {
        let small = self.config.compaction_target_bytes / 2;
        let mut merged = 0;
        for t in self.metadata.list_topics().await? {
            for p in 0..t.partition_count {
                let state = self.metadata.partition_state(t.id, p).await?;
                let segments = self
                    .metadata
                    .segments(t.id, p, state.log_start_offset, 10_000)
                    .await?;
                metrics::gauge!("streamhouse_partition_segments", "topic" => t.name.clone(), "partition" => p.to_string())
                    .set(segments.len() as f64);
                // Runs of consecutive small segments, each up to the target.
                let mut runs: Vec<Vec<Segment>> = vec![Vec::new()];
                let mut run_bytes = 0;
                for s in segments {
                    if s.byte_length >= small
                        || run_bytes + s.byte_length > self.config.compaction_target_bytes
                    {
                        runs.push(Vec::new());
                        run_bytes = 0;
                    }
                    if s.byte_length < small {
                        run_bytes += s.byte_length;
                        runs.last_mut().expect("a run is open").push(s);
                    }
                }
                for run in runs.iter().filter(|r| r.len() >= 2) {
                    merged += self.merge(&t, run).await? as u64;
                }
            }
        }
        Ok(merged)
    }

    /// Writes `run`'s bytes as one object and swaps the segment rows.
    async fn merge(&self, t: &Topic, run: &[Segment]) -> Result<usize, JobError> {
        let mut parts = Vec::with_capacity(run.len());
        for s in run {
            parts.push(self.reader.segment_bytes(s).await?);
        }
        let replaced = self.replace(t, run, &parts).await?;
        Ok(if replaced { run.len() - 1 } else { 0 })
    }

    /// Stores `parts` (whole batches, in offset order) as one new object
    /// holding the offsets of `run`, and swaps the rows atomically.
    async fn replace(&self, t: &Topic, run: &[Segment], parts: &[Bytes]) -> Result<bool, JobError> {
        let (first, last) = (&run[0], &run[run.len() - 1]);
        let total: usize = parts.iter().map(Bytes::len).sum();
        let mut builder = ObjectBuilder::with_capacity(total);
        let mut records = 0;
        let mut min_ts = i64::MAX;
        let mut max_ts = i64::MIN;
        for part in parts {
            for item in batches(part) {
                let (h, raw) = item?;
                builder.push_batch(
                    t.id,
                    first.partition,
                    raw,
                    h.record_count as u64,
                    h.base_timestamp,
                    h.max_timestamp,
                );
                records += i64::from(h.record_count);
                min_ts = min_ts.min(h.base_timestamp);
                max_ts = max_ts.max(h.max_timestamp);
            }
        }
        let length = builder.len() as u64;
        let (object, _) = builder.finish();
        let size = object.len() as u64;
        let key = streamhouse_storage::upload_object(self.store.clone(), object).await?;
        let new = Segment {
            topic_id: t.id,
            partition: first.partition,
            base_offset: first.base_offset,
            last_offset: last.last_offset,
            record_count: records,
            object_key: key,
            object_size: size,
            byte_start: 0,
            byte_length: length,
            min_timestamp: if records > 0 {
                min_ts
            } else {
                first.min_timestamp
            },
            max_timestamp: if records > 0 {
                max_ts
            } else {
                last.max_timestamp
            },
        };
        // If the rows changed meanwhile, the new object is left to the GC.
        let replaced = self.metadata.replace_segments(run, &new).await?;
        if replaced {
            self.reader.forget_segments(t.id, first.partition);
        }
        Ok(replaced)
    }

    /// Keeps only the latest record per key in compacted topics (and drops
    /// tombstones older than `delete.retention.ms`), preserving offsets;
    /// returns records removed.
    pub(crate) async fn key_compaction(&self) -> Result<u64, JobError> {
        let mut removed = 0;
        for t in self.metadata.list_topics().await? {
            let compact = t
                .config
                .get(CLEANUP_POLICY)
                .is_some_and(|p| p.contains("compact"));
            if !compact {
                continue;
            }
            let tombstone_ms = t
                .config
                .get(DELETE_RETENTION_MS)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(86_400_000);
            for p in 0..t.partition_count {
                removed += self.compact_partition(&t, p, tombstone_ms).await?;
            }
        }
        Ok(removed)
    }

    async fn compact_partition(
        &self,
        t: &Topic,
        p: u32,
        tombstone_ms: i64,
    ) -> Result<u64, JobError> {
        let state = self.metadata.partition_state(t.id, p).await?;
        // Only what every reader may see: below the last stable offset.
        let segments: Vec<Segment> = self
            .metadata
            .segments(t.id, p, state.log_start_offset, 100_000)
            .await?
            .into_iter()
            .filter(|s| s.last_offset < state.last_stable_offset)
            .collect();
        if segments.is_empty() {
            return Ok(0);
        }
        let mut parts = Vec::with_capacity(segments.len());
        for s in &segments {
            parts.push(self.reader.segment_bytes(s).await?);
        }
        // First pass: the latest offset of every key.
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        for (s, part) in segments.iter().zip(&parts) {
            let mut base = s.base_offset;
            for item in batches(part) {
                let (h, raw) = item?;
                if !h.attributes.is_control() && !h.attributes.is_transactional() {
                    let mut batch = RecordBatch::decode(&Bytes::copy_from_slice(raw))?;
                    batch.base_offset = base;
                    for (offset, _, r) in batch.iter() {
                        if let Some(k) = &r.key {
                            latest.insert(k.clone(), offset);
                        }
                    }
                }
                base += h.offset_span();
            }
        }
        // Second pass: rewrite batches without superseded records and old
        // tombstones; offset spans (and so every offset) stay the same.
        let now = now_ms();
        let mut removed = 0u64;
        let mut rewritten = Vec::with_capacity(parts.len());
        for (s, part) in segments.iter().zip(&parts) {
            let mut out = Vec::with_capacity(part.len());
            let mut base = s.base_offset;
            for item in batches(part) {
                let (h, raw) = item?;
                if h.attributes.is_control() || h.attributes.is_transactional() {
                    out.extend_from_slice(raw);
                } else {
                    let mut batch = RecordBatch::decode(&Bytes::copy_from_slice(raw))?;
                    let before = batch.records.len();
                    let base_ts = batch.base_timestamp;
                    batch.records.retain(|r| {
                        let Some(k) = &r.key else { return true };
                        let offset = base + i64::from(r.offset_delta);
                        let newest = latest.get(k) == Some(&offset);
                        let expired_tombstone =
                            r.value.is_none() && now - (base_ts + r.timestamp_delta) > tombstone_ms;
                        newest && !expired_tombstone
                    });
                    removed += (before - batch.records.len()) as u64;
                    if batch.records.len() == before {
                        out.extend_from_slice(raw);
                    } else {
                        out.extend_from_slice(&batch.encode()?);
                    }
                }
                base += h.offset_span();
            }
            rewritten.push(Bytes::from(out));
        }
        if removed == 0 {
            return Ok(0);
        }
        if !self.replace(t, &segments, &rewritten).await? {
            return Ok(0);
        }
        Ok(removed)
    }
}

/// Milliseconds since the epoch `grace` ago.
fn cutoff_ms(grace: Duration) -> i64 {
    now_ms() - grace.as_millis() as i64
}
