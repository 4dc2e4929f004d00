//! Key-based log compaction of topics with `cleanup.policy=compact`: keeps
//! only the latest record per key (and drops tombstones older than
//! `delete.retention.ms`), preserving every offset.
//!
//! Incremental and bounded: the job remembers per partition up to which
//! offset it has cleaned. A run over a partition happens only when records
//! arrived past that offset (below the last stable offset) or a kept
//! tombstone has expired. It maps the keys of the new records to their
//! latest offsets (at most `key_compaction_map_bytes`; the rest waits for
//! the next run), then streams the partition's segments one at a time and
//! rewrites only those that lose a record, in runs of at most the
//! compaction target size. A partition with an undecodable batch is
//! skipped (counted in `streamhouse_compaction_skipped_total`, logged once)
//! and the other partitions are still compacted.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;
use streamhouse_core::{RecordBatch, batches};
use streamhouse_metadata::{DELETE_RETENTION_MS, Segment, Topic, TopicId};

use super::{JobError, Jobs, now_ms};

/// Memory a key takes in the key map beyond its bytes.
const KEY_OVERHEAD: usize = 64;

/// Segment rows read from the metadata store per lookup.
const SEGMENTS_PER_PAGE: u32 = 1000;

/// What key compaction remembers between runs.
#[derive(Default)]
pub(super) struct CleanedPartitions {
    partitions: Mutex<HashMap<(TopicId, u32), Cleaned>>,
    /// Partitions whose skip has been logged.
    logged_skips: Mutex<HashSet<(TopicId, u32)>>,
}

/// How far one partition is compacted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cleaned {
    /// No record below this offset has a later record of its key below it.
    to: i64,
    /// When the earliest tombstone kept below `to` expires.
    tombstone_due: Option<i64>,
}

impl CleanedPartitions {
    fn get(&self, topic_id: TopicId, partition: u32) -> Cleaned {
        self.partitions
            .lock()
            .expect("cleaned partitions lock")
            .get(&(topic_id, partition))
            .copied()
            .unwrap_or_default()
    }

    fn set(&self, topic_id: TopicId, partition: u32, cleaned: Cleaned) {
        self.partitions
            .lock()
            .expect("cleaned partitions lock")
            .insert((topic_id, partition), cleaned);
    }

    /// Forgets partitions of topics not in `live`.
    fn retain_topics(&self, live: &HashSet<TopicId>) {
        self.partitions
            .lock()
            .expect("cleaned partitions lock")
            .retain(|(id, _), _| live.contains(id));
        self.logged_skips
            .lock()
            .expect("logged skips lock")
            .retain(|(id, _)| live.contains(id));
    }

    /// True the first time a skip of this partition is reported.
    fn first_skip(&self, topic_id: TopicId, partition: u32) -> bool {
        self.logged_skips
            .lock()
            .expect("logged skips lock")
            .insert((topic_id, partition))
    }

    /// Partitions remembered (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.partitions
            .lock()
            .expect("cleaned partitions lock")
            .len()
    }
}

/// The latest offset of each key of the records mapped, bounded in memory.
#[derive(Default)]
struct KeyMap {
    latest: HashMap<Bytes, i64>,
    bytes: usize,
}

impl KeyMap {
    /// Maps the keyed records of a data batch at `base`.
    fn add(&mut self, batch: &RecordBatch, base: i64) {
        for r in &batch.records {
            if let Some(k) = &r.key {
                let offset = base + i64::from(r.offset_delta);
                // Copied: a key must not keep its whole batch in memory.
                if self
                    .latest
                    .insert(Bytes::copy_from_slice(k), offset)
                    .is_none()
                {
                    self.bytes += k.len() + KEY_OVERHEAD;
                }
            }
        }
    }
}

/// Whether a batch holds data records that key compaction may drop.
fn is_data(h: &streamhouse_core::BatchHeader) -> bool {
    !h.attributes.is_control() && !h.attributes.is_transactional()
}

impl Jobs {
    /// Compacts every partition of compacted topics that has new records or
    /// an expired tombstone; returns records removed.
    pub(crate) async fn key_compaction(&self) -> Result<u64, JobError> {
        let topics = self.metadata.list_topics().await?;
        self.cleaned
            .retain_topics(&topics.iter().map(|t| t.id).collect());
        let mut removed = 0;
        for t in &topics {
            if !t.is_compacted() {
                continue;
            }
            let tombstone_ms = t
                .config
                .get(DELETE_RETENTION_MS)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(86_400_000);
            for p in 0..t.partition_count {
                match self.compact_partition(t, p, tombstone_ms).await {
                    Ok(n) => removed += n,
                    Err(JobError::Batch(e)) => {
                        metrics::counter!("streamhouse_compaction_skipped_total", "topic" => t.name.clone())
                            .increment(1);
                        if self.cleaned.first_skip(t.id, p) {
                            tracing::error!(
                                topic = %t.name, partition = p, error = %e,
                                "key compaction skips a partition holding an undecodable batch"
                            );
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }

    /// The segments of a partition from `from` whose records all lie
    /// below `end`, in offset order.
    async fn segments_below(
        &self,
        t: &Topic,
        p: u32,
        from: i64,
        end: i64,
    ) -> Result<Vec<Segment>, JobError> {
        let mut out: Vec<Segment> = Vec::new();
        let mut at = from;
        while at < end {
            let page = self
                .metadata
                .segments(t.id, p, at, SEGMENTS_PER_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            at = last.last_offset + 1;
            let full = page.len() == SEGMENTS_PER_PAGE as usize;
            out.extend(page.into_iter().filter(|s| s.last_offset < end));
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// One partition's run; returns records removed.
    async fn compact_partition(
        &self,
        t: &Topic,
        p: u32,
        tombstone_ms: i64,
    ) -> Result<u64, JobError> {
        let state = self.metadata.partition_state(t.id, p).await?;
        let before = self.cleaned.get(t.id, p);
        let clean_to = before.to.max(state.log_start_offset);
        let now = now_ms();
        let tombstone_due = before.tombstone_due.is_some_and(|d| d <= now);
        // Only what every reader may see: below the last stable offset.
        let segments = self
            .segments_below(t, p, state.log_start_offset, state.last_stable_offset)
            .await?;
        let has_new = segments.last().is_some_and(|s| s.last_offset >= clean_to);
        if !has_new && !tombstone_due {
            return Ok(0);
        }
        // First pass: the latest offset of every key of the new records,
        // segment by segment until the map is full.
        let mut map = KeyMap::default();
        let mut dirty_end = clean_to;
        for s in segments.iter().filter(|s| s.last_offset >= clean_to) {
            if map.bytes >= self.config.key_compaction_map_bytes {
                break;
            }
            let data = self.reader.segment_bytes(s).await?;
            let mut base = s.base_offset;
            for item in batches(&data) {
                let (h, raw) = item?;
                if is_data(&h) {
                    map.add(&RecordBatch::decode(&data.slice_ref(raw))?, base);
                }
                base += h.offset_span();
            }
            dirty_end = s.last_offset + 1;
        }
        // Second pass: rewrite the segments below `dirty_end` that lose a
        // record; offset spans (and so every offset) stay the same.
        let mut removed = 0u64;
        let mut all_replaced = true;
        let mut next_due: Option<i64> = None;
        let mut run: Vec<Segment> = Vec::new();
        let mut parts: Vec<Bytes> = Vec::new();
        let mut run_bytes = 0u64;
        for s in segments.iter().filter(|s| s.last_offset < dirty_end) {
            let data = self.reader.segment_bytes(s).await?;
            let (out, dropped, due) = rewrite_segment(s, &data, &map, now, tombstone_ms)?;
            next_due = min_opt(next_due, due);
            if dropped == 0 {
                all_replaced &= self.flush_run(t, &mut run, &mut parts).await?;
                run_bytes = 0;
                continue;
            }
            removed += dropped;
            run_bytes += out.len() as u64;
            run.push(s.clone());
            parts.push(out);
            if run_bytes >= self.config.compaction_target_bytes {
                all_replaced &= self.flush_run(t, &mut run, &mut parts).await?;
                run_bytes = 0;
            }
        }
        all_replaced &= self.flush_run(t, &mut run, &mut parts).await?;
        if all_replaced {
            self.cleaned.set(
                t.id,
                p,
                Cleaned {
                    to: dirty_end,
                    tombstone_due: next_due,
                },
            );
            Ok(removed)
        } else {
            // The rows changed meanwhile: the next run starts over.
            Ok(0)
        }
    }

    /// Replaces the rows of a run of rewritten segments, if any; false when
    /// they changed meanwhile.
    async fn flush_run(
        &self,
        t: &Topic,
        run: &mut Vec<Segment>,
        parts: &mut Vec<Bytes>,
    ) -> Result<bool, JobError> {
        if run.is_empty() {
            return Ok(true);
        }
        let replaced = self.replace(t, run, parts).await?;
        run.clear();
        parts.clear();
        Ok(replaced)
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `data` (the batches of `s`) without the records `map` supersedes and
/// the tombstones expired at `now`; with the records dropped and when the
/// earliest tombstone kept expires.
fn rewrite_segment(
    s: &Segment,
    data: &Bytes,
    map: &KeyMap,
    now: i64,
    tombstone_ms: i64,
) -> Result<(Bytes, u64, Option<i64>), JobError> {
    let mut out = Vec::with_capacity(data.len());
    let mut base = s.base_offset;
    let mut dropped = 0u64;
    let mut due = None;
    for item in batches(data) {
        let (h, raw) = item?;
        if !is_data(&h) {
            out.extend_from_slice(raw);
            base += h.offset_span();
            continue;
        }
        let mut batch = RecordBatch::decode(&data.slice_ref(raw))?;
        let before = batch.records.len();
        let base_ts = batch.base_timestamp;
        batch.records.retain(|r| {
            let Some(k) = &r.key else { return true };
            let offset = base + i64::from(r.offset_delta);
            let superseded = map.latest.get(k).is_some_and(|&o| o > offset);
            if superseded {
                return false;
            }
            if r.value.is_none() {
                let expires = base_ts + r.timestamp_delta + tombstone_ms;
                if expires < now {
                    return false;
                }
                due = min_opt(due, Some(expires));
            }
            true
        });
        dropped += (before - batch.records.len()) as u64;
        if batch.records.len() == before {
            out.extend_from_slice(raw);
        } else {
            out.extend_from_slice(&batch.encode()?);
        }
        base += h.offset_span();
    }
    Ok((Bytes::from(out), dropped, due))
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamhouse_core::NewRecord;

    fn segment(base: i64, last: i64) -> Segment {
        Segment {
            topic_id: 1,
            partition: 0,
            base_offset: base,
            last_offset: last,
            record_count: last - base + 1,
            object_key: "k".into(),
            object_size: 0,
            byte_start: 0,
            byte_length: 0,
            min_timestamp: 0,
            max_timestamp: 0,
        }
    }

    fn batch(records: &[(&str, Option<&str>)], ts: i64) -> Bytes {
        RecordBatch::from_records(
            records
                .iter()
                .map(|(k, v)| NewRecord {
                    timestamp: ts,
                    key: Some(Bytes::from(k.to_string())),
                    value: v.map(|v| Bytes::from(v.to_string())),
                    headers: vec![],
                })
                .collect::<Vec<_>>(),
        )
        .encode()
        .unwrap()
    }

    #[test]
    fn superseded_records_and_expired_tombstones_are_dropped() {
        let data = batch(&[("a", Some("1")), ("b", None), ("c", None)], 1000);
        let mut map = KeyMap::default();
        map.latest.insert(Bytes::from_static(b"a"), 7);
        map.latest.insert(Bytes::from_static(b"b"), 1);
        // a is superseded at 7; b's tombstone (offset 1) is its latest and
        // has not expired at 1500 with a 1000 ms retention; so is c's.
        let (out, dropped, due) = rewrite_segment(&segment(0, 2), &data, &map, 1500, 1000).unwrap();
        assert_eq!(dropped, 1);
        assert_eq!(due, Some(2000));
        let kept = RecordBatch::decode(&out).unwrap();
        assert_eq!(kept.records.len(), 2);
        assert_eq!(kept.last_offset_delta, 2, "offsets are preserved");
        // Later both tombstones have expired.
        let (_, dropped, due) = rewrite_segment(&segment(0, 2), &data, &map, 2500, 1000).unwrap();
        assert_eq!((dropped, due), (3, None));
        // Nothing to drop: the bytes are the same.
        let (out, dropped, _) =
            rewrite_segment(&segment(0, 2), &data, &KeyMap::default(), 0, 1000).unwrap();
        assert_eq!((dropped, &out), (0, &data));
    }

    #[test]
    fn the_key_map_counts_its_memory_and_skips_are_logged_once() {
        let mut map = KeyMap::default();
        let data = batch(&[("ab", Some("1")), ("ab", Some("2")), ("c", None)], 0);
        map.add(&RecordBatch::decode(&data).unwrap(), 10);
        assert_eq!(map.latest.get(&Bytes::from_static(b"ab")), Some(&11));
        assert_eq!(map.bytes, 3 + 2 * KEY_OVERHEAD);
        let cleaned = CleanedPartitions::default();
        assert!(cleaned.first_skip(1, 0));
        assert!(!cleaned.first_skip(1, 0));
        cleaned.set(1, 0, Cleaned::default());
        cleaned.set(2, 0, Cleaned::default());
        cleaned.retain_topics(&[2].into_iter().collect());
        assert_eq!(cleaned.len(), 1);
        assert!(
            cleaned.first_skip(1, 0),
            "a deleted topic's skip is forgotten"
        );
    }
}
