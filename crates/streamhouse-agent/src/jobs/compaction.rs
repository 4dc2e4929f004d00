//! Compaction: merges runs of small segments of a partition into one
//! object, and the atomic swap of segment rows that key compaction uses
//! too.

use bytes::Bytes;
use streamhouse_core::batches;
use streamhouse_metadata::{Segment, Topic};
use streamhouse_storage::object::ObjectBuilder;

use super::{JobError, Jobs};

impl Jobs {
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
    /// holding the offsets of `run`, and swaps the rows atomically. False
    /// when the rows changed meanwhile (the new object is left to the GC).
    pub(super) async fn replace(
        &self,
        t: &Topic,
        run: &[Segment],
        parts: &[Bytes],
    ) -> Result<bool, JobError> {
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
        let replaced = self.metadata.replace_segments(run, &new).await?;
        if replaced {
            self.reader.forget_segments(t.id, first.partition);
        }
        Ok(replaced)
    }
}
