//! The read path: whole record batches of a partition from an offset, with
//! their base offsets patched to the offsets assigned at commit.
//!
//! Segment rows come from the metadata store (cached per partition, bounded
//! in rows, dropped below the log start and for deleted topics: a
//! committed segment row only changes when compaction replaces it); bytes
//! come from the objects this process wrote recently, else from an LRU of
//! aligned blocks shared by all readers, else from a range GET of the
//! block. A read loads a segment front to back a block at a time and stops
//! loading once it has its `max_bytes`, so a small read of a large segment
//! does not fetch all of it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use object_store::{ObjectStore, ObjectStoreExt, path::Path};
use streamhouse_core::batch::BATCH_HEADER_LEN;
use streamhouse_core::{BatchHeader, batches};
use streamhouse_metadata::{MetadataStore, Segment, TopicId};

use crate::cache::{BlockCache, CacheStats, RecentObjects, SegmentCache, SegmentCacheStats};
use crate::error::{Error, Result};
use crate::topics::TopicCache;

/// Settings of a [`Reader`].
#[derive(Clone, Debug)]
pub struct ReaderConfig {
    /// Size (and alignment) of the blocks fetched and cached. Default 4 MiB.
    pub block_size: u64,
    /// Bytes of blocks kept in the LRU cache. Default 1 GiB.
    pub cache_bytes: usize,
    /// Segment rows fetched from the metadata store per lookup. Default 64.
    pub segments_per_lookup: u32,
    /// Most segment rows cached over all partitions. Default 100,000.
    pub segment_cache_rows: usize,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            block_size: 4 << 20,
            cache_bytes: 1 << 30,
            segments_per_lookup: 64,
            segment_cache_rows: 100_000,
        }
    }
}

/// What a read returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches in offset order, base offsets patched. The first one
    /// holds the requested offset (and may start before it).
    pub batches: Vec<Bytes>,
    /// First offset still readable.
    pub log_start_offset: i64,
    /// Offset the next committed record gets (the high watermark).
    pub next_offset: i64,
    /// First offset of the oldest open transaction, or `next_offset`.
    pub last_stable_offset: i64,
    /// With [`Reader::read_committed`]: aborted transactions overlapping
    /// the batches returned.
    pub aborted: Vec<streamhouse_metadata::AbortedTransaction>,
}

/// Reads committed batches; the design is in the `reader` module docs
/// (`cargo doc --document-private-items`).
pub struct Reader {
    store: Arc<dyn ObjectStore>,
    metadata: Arc<dyn MetadataStore>,
    config: ReaderConfig,
    topics: TopicCache,
    recent: Option<Arc<RecentObjects>>,
    blocks: Arc<BlockCache>,
    segments: SegmentCache,
    /// Where the last read of each partition stopped inside a segment, so
    /// the next read (a consumer's next fetch) starts there instead of
    /// loading and checking the segment from its start again.
    cursors: std::sync::Mutex<std::collections::HashMap<(TopicId, u32), Cursor>>,
}

/// The first batch a read of a partition left in a segment.
#[derive(Clone, Debug)]
struct Cursor {
    object_key: String,
    byte_start: u64,
    /// Its byte position in the segment, and its base offset.
    pos: usize,
    base: i64,
}

/// Partitions whose cursor a reader keeps at most (all are dropped past
/// it: they only save work).
const MAX_CURSORS: usize = 100_000;

/// The bytes of one segment loaded so far, from byte `origin` of it.
struct Loaded {
    segment: Arc<Segment>,
    origin: usize,
    data: BytesMut,
}

/// The batch at the front of `buf` with its header, if its framing and
/// CRC32C hold; otherwise why not.
fn check_batch(buf: &[u8]) -> std::result::Result<(BatchHeader, &[u8]), String> {
    let header = BatchHeader::parse(buf).map_err(|e| e.to_string())?;
    let raw = buf.get(..header.total_len()).ok_or_else(|| {
        format!(
            "batch of {} bytes, {} left in the segment",
            header.total_len(),
            buf.len()
        )
    })?;
    BatchHeader::validate(raw, usize::MAX).map_err(|e| e.to_string())?;
    Ok((header, raw))
}

/// The offsets a batch at offset `base` of `segment` that failed
/// [`check_batch`] covers, and its length in bytes when known: its own
/// range when the batches after it still walk exactly to the segment's end
/// (only its contents are bad), else the rest of the segment.
fn corrupt_range(segment: &Segment, base: i64, rest: &[u8]) -> (i64, Option<usize>) {
    let Ok(h) = BatchHeader::parse(rest) else {
        return (segment.last_offset, None);
    };
    let Some(mut tail) = rest.get(h.total_len()..) else {
        return (segment.last_offset, None);
    };
    let mut next = base + h.offset_span();
    while !tail.is_empty() {
        match check_batch(tail) {
            Ok((h, raw)) => {
                next += h.offset_span();
                tail = &tail[raw.len()..];
            }
            Err(_) => return (segment.last_offset, None),
        }
    }
    if next == segment.last_offset + 1 {
        (base + h.offset_span() - 1, Some(h.total_len()))
    } else {
        (segment.last_offset, None)
    }
}

/// Counts, logs and describes a corrupt batch that a read would serve.
fn corrupt_batch(
    topic: &str,
    partition: u32,
    segment: &Segment,
    (first_offset, last_offset): (i64, i64),
    reason: String,
) -> Error {
    metrics::counter!("streamhouse_corrupt_batches_total").increment(1);
    tracing::error!(
        topic, partition, first_offset, last_offset, object = %segment.object_key, %reason,
        "corrupt record batch: not served"
    );
    Error::CorruptBatch {
        topic: topic.to_string(),
        partition,
        first_offset,
        last_offset,
        key: segment.object_key.clone(),
        reason,
    }
}

impl Reader {
    /// A reader of `store` and `metadata`. Pass the
    /// [`recent_objects`](crate::WritePipeline::recent_objects) of a pipeline
    /// in the same process to serve what it just wrote from memory.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        recent: Option<Arc<RecentObjects>>,
        config: ReaderConfig,
    ) -> Self {
        Reader {
            store,
            topics: TopicCache::new(metadata.clone()),
            metadata,
            recent,
            blocks: Arc::new(BlockCache::new(config.block_size, config.cache_bytes)),
            segments: SegmentCache::new(config.segment_cache_rows),
            cursors: std::sync::Mutex::default(),
            config,
        }
    }

    /// Block cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.blocks.stats()
    }

    /// Sizes of the segment row cache.
    pub fn segment_cache_stats(&self) -> SegmentCacheStats {
        self.segments.stats()
    }

    /// Reads whole batches of `topic`/`partition` starting with the one that
    /// holds `offset`, adding batches while the total stays within
    /// `max_bytes` (the first batch is returned whatever its size, so a
    /// reader always progresses; `max_bytes` 0 reads no batch, only the
    /// partition's offsets). Reading at the next offset returns no
    /// batches; an offset below the log start or beyond the next offset is
    /// [`Error::OffsetOutOfRange`].
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        self.read_to(topic, partition, offset, max_bytes, false)
            .await
    }

    /// Like [`read`](Self::read), but only up to the last stable offset
    /// (committed transactions), with the aborted transactions overlapping
    /// what it returns.
    pub async fn read_committed(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        self.read_to(topic, partition, offset, max_bytes, true)
            .await
    }

    async fn read_to(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
        committed: bool,
    ) -> Result<ReadResult> {
        let state = self.partition_state(topic, partition).await?;
        let t = self.topics.resolve(topic, partition).await?;
        let end = if committed {
            state.last_stable_offset
        } else {
            state.next_offset
        };
        let mut result = ReadResult {
            batches: Vec::new(),
            log_start_offset: state.log_start_offset,
            next_offset: state.next_offset,
            last_stable_offset: state.last_stable_offset,
            aborted: Vec::new(),
        };
        if offset < state.log_start_offset || offset > state.next_offset {
            return Err(Error::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset,
                log_start_offset: state.log_start_offset,
                next_offset: state.next_offset,
            });
        }
        self.segments
            .trim_below((t.id, partition), state.log_start_offset);
        if max_bytes == 0 {
            return Ok(result);
        }
        let mut bytes = 0usize;
        let mut at = offset;
        let mut first = true;
        'segments: while at < end && (result.batches.is_empty() || bytes < max_bytes) {
            let mut segment = self.segment(t.id, partition, at).await?;
            if std::mem::take(&mut first) {
                self.prefetch_after((t.id, partition), &segment, max_bytes);
            }
            // Where the last read of this partition stopped, if in this
            // segment at or before `at`.
            let (mut pos, mut base) = self
                .cursor((t.id, partition), &segment)
                .filter(|c| c.base <= at)
                .map_or((0, segment.base_offset), |c| (c.pos, c.base));
            let mut loaded = Loaded {
                segment: segment.clone(),
                origin: pos,
                data: BytesMut::new(),
            };
            match self.load_batch(&mut loaded, pos).await {
                // The segment was replaced (compaction) and its object
                // collected: forget the cached rows and look again.
                Err(Error::ObjectStore {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => {
                    self.forget_segments(t.id, partition);
                    segment = self.segment(t.id, partition, at).await?;
                    (pos, base) = (0, segment.base_offset);
                    loaded = Loaded {
                        segment: segment.clone(),
                        origin: 0,
                        data: BytesMut::new(),
                    };
                    self.load_batch(&mut loaded, 0).await?;
                }
                r => r?,
            }
            while pos < segment.byte_length as usize {
                self.load_batch(&mut loaded, pos).await?;
                let rest = &loaded.data[pos - loaded.origin..];
                let (header, raw) = match check_batch(rest) {
                    Ok(ok) => ok,
                    Err(reason) => {
                        self.load_to(&mut loaded, segment.byte_length as usize)
                            .await?;
                        let rest = &loaded.data[pos - loaded.origin..];
                        let (last, len) = corrupt_range(&segment, base, rest);
                        // A corrupt batch wholly before the offset asked
                        // for (a consumer skipped it) is passed over.
                        if let Some(len) = len
                            && last < at
                        {
                            pos += len;
                            base = last + 1;
                            continue;
                        }
                        // Serve what was read before it; the next read
                        // starts at the corrupt batch and reports it.
                        if !result.batches.is_empty() {
                            break 'segments;
                        }
                        return Err(corrupt_batch(
                            topic,
                            partition,
                            &segment,
                            (base, last),
                            reason,
                        ));
                    }
                };
                pos += raw.len();
                let last = base + header.offset_span() - 1;
                if base >= end {
                    self.keep_cursor((t.id, partition), &segment, pos - raw.len(), base);
                    break 'segments;
                }
                if last >= at {
                    if !result.batches.is_empty() && bytes + raw.len() > max_bytes {
                        self.keep_cursor((t.id, partition), &segment, pos - raw.len(), base);
                        break 'segments;
                    }
                    let mut patched = BytesMut::from(raw);
                    streamhouse_core::set_base_offset(&mut patched, base);
                    bytes += raw.len();
                    result.batches.push(patched.freeze());
                    at = last + 1;
                }
                base = last + 1;
            }
            if base != segment.last_offset + 1 {
                return Err(Error::CorruptObject {
                    key: segment.object_key.clone(),
                    reason: format!(
                        "segment {}..={} holds batches up to offset {}",
                        segment.base_offset,
                        segment.last_offset,
                        base - 1
                    ),
                });
            }
            at = base;
        }
        if committed && !result.batches.is_empty() {
            result.aborted = self
                .metadata
                .aborted_transactions(t.id, partition, offset, at)
                .await?;
        }
        Ok(result)
    }

    /// Log start and next offset of a partition.
    pub async fn partition_state(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<streamhouse_metadata::PartitionState> {
        let t = self.topics.resolve(topic, partition).await?;
        match self.metadata.partition_state(t.id, partition).await {
            Err(streamhouse_metadata::Error::PartitionIdNotFound { .. }) => {
                self.topics.invalidate(topic);
                self.segments.forget_topic(t.id);
                Err(Error::TopicNotFound(topic.to_string()))
            }
            r => Ok(r?),
        }
    }

    /// The first offset whose record timestamp is at or after `timestamp`,
    /// or `None` when every record is older.
    pub async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<Option<i64>> {
        let t = self.topics.resolve(topic, partition).await?;
        let Some(segment) = self
            .metadata
            .segment_for_timestamp(t.id, partition, timestamp)
            .await?
        else {
            return Ok(None);
        };
        let data = self.segment_bytes(&segment).await?;
        let mut base = segment.base_offset;
        for item in batches(&data) {
            let (header, raw) = item.map_err(|e| Error::CorruptObject {
                key: segment.object_key.clone(),
                reason: e.to_string(),
            })?;
            if header.max_timestamp >= timestamp {
                let mut batch = streamhouse_core::RecordBatch::decode(&Bytes::copy_from_slice(raw))
                    .map_err(|e| Error::CorruptObject {
                        key: segment.object_key.clone(),
                        reason: e.to_string(),
                    })?;
                batch.base_offset = base;
                if let Some((offset, _, _)) = batch.iter().find(|(_, ts, _)| *ts >= timestamp) {
                    return Ok(Some(offset));
                }
            }
            base += header.offset_span();
        }
        // The segment's maximum says a later record exists: it starts after.
        Ok(Some(segment.last_offset + 1))
    }

    /// Drops the cached segment rows of a partition.
    pub fn forget_segments(&self, topic_id: TopicId, partition: u32) {
        self.segments.forget((topic_id, partition));
        self.cursors
            .lock()
            .expect("cursors lock")
            .remove(&(topic_id, partition));
    }

    /// The cursor of a partition, if it lies in `segment`.
    fn cursor(&self, key: (TopicId, u32), segment: &Segment) -> Option<Cursor> {
        self.cursors
            .lock()
            .expect("cursors lock")
            .get(&key)
            .filter(|c| c.object_key == segment.object_key && c.byte_start == segment.byte_start)
            .cloned()
    }

    /// Remembers that the next read of a partition may start at the batch
    /// at `pos` of `segment`, whose base offset is `base`.
    fn keep_cursor(&self, key: (TopicId, u32), segment: &Segment, pos: usize, base: i64) {
        let mut cursors = self.cursors.lock().expect("cursors lock");
        if cursors.len() >= MAX_CURSORS && !cursors.contains_key(&key) {
            cursors.clear();
        }
        cursors.insert(
            key,
            Cursor {
                object_key: segment.object_key.clone(),
                byte_start: segment.byte_start,
                pos,
                base,
            },
        );
    }

    /// The segment holding `offset`, from the cache or the metadata store.
    async fn segment(
        &self,
        topic_id: TopicId,
        partition: u32,
        offset: i64,
    ) -> Result<Arc<Segment>> {
        let key = (topic_id, partition);
        if let Some(s) = self.segments.find(key, offset) {
            return Ok(s);
        }
        let rows = self
            .metadata
            .segments(topic_id, partition, offset, self.config.segments_per_lookup)
            .await?;
        let found = rows
            .iter()
            .find(|s| s.base_offset <= offset && s.last_offset >= offset)
            .cloned();
        self.segments.insert(key, rows, offset);
        found.map(Arc::new).ok_or_else(|| Error::CorruptObject {
            key: format!("topic id {topic_id} partition {partition}"),
            reason: format!("no segment holds committed offset {offset}"),
        })
    }

    /// Loads the batch at `pos` of a segment: its header, then as much as
    /// the header says it spans (everything when the header is unreadable).
    async fn load_batch(&self, loaded: &mut Loaded, pos: usize) -> Result<()> {
        self.load_to(loaded, pos + BATCH_HEADER_LEN).await?;
        let at = (pos - loaded.origin).min(loaded.data.len());
        let end = match BatchHeader::parse(&loaded.data[at..]) {
            Ok(h) => pos.saturating_add(h.total_len()),
            Err(_) => usize::MAX,
        };
        self.load_to(loaded, end).await
    }

    /// Loads a segment's bytes up to at least `end` (at most its length),
    /// to the end of the block holding `end - 1`.
    async fn load_to(&self, loaded: &mut Loaded, end: usize) -> Result<()> {
        let s = loaded.segment.clone();
        let length = s.byte_length;
        let end = (end as u64).min(length);
        let have = (loaded.origin + loaded.data.len()) as u64;
        if end <= have {
            return Ok(());
        }
        let block = self.config.block_size.max(1);
        let block_end = (s.byte_start + end).div_ceil(block) * block;
        let to = (block_end - s.byte_start).min(length);
        let bytes = self.segment_range(&s, have, to).await?;
        loaded.data.extend_from_slice(&bytes);
        Ok(())
    }

    /// The stored bytes of a segment: whole batches, base offsets 0.
    pub async fn segment_bytes(&self, s: &Segment) -> Result<Bytes> {
        self.segment_range(s, 0, s.byte_length).await
    }

    /// Bytes `from..to` of a segment (offsets within the segment).
    async fn segment_range(&self, s: &Segment, from: u64, to: u64) -> Result<Bytes> {
        let (start, end) = (s.byte_start + from, s.byte_start + to);
        if let Some(bytes) = self
            .recent
            .as_ref()
            .and_then(|r| r.get_range(&s.object_key, start, end))
        {
            return Ok(bytes);
        }
        self.blocks
            .get_range(&s.object_key, s.object_size, start, end, |from, to| {
                load_range(self.store.clone(), s.object_key.clone(), from, to)
            })
            .await
    }

    /// Starts loading the first blocks of the segments that follow
    /// `segment` in the partition, as far as the segment rows cached say
    /// and about `max_bytes` reach (at most [`PREFETCH_SEGMENTS`]), so a
    /// read crossing many small segments does not wait for their GETs one
    /// after the other. Segments of objects held in memory are skipped.
    fn prefetch_after(&self, key: (TopicId, u32), segment: &Segment, max_bytes: usize) {
        let mut next = segment.last_offset + 1;
        let mut reach = segment.byte_length as usize;
        for _ in 0..PREFETCH_SEGMENTS {
            if reach >= max_bytes {
                break;
            }
            let Some(s) = self.segments.find(key, next) else {
                break;
            };
            let in_memory = self.recent.as_ref().is_some_and(|r| {
                r.get_range(&s.object_key, s.byte_start, s.byte_start + 1)
                    .is_some()
            });
            if !in_memory {
                let (store, object) = (self.store.clone(), s.object_key.clone());
                self.blocks.prefetch(
                    &s.object_key,
                    s.object_size,
                    s.byte_start,
                    move |from, to| load_range(store, object, from, to),
                );
            }
            reach += s.byte_length as usize;
            next = s.last_offset + 1;
        }
    }
}

/// Segments whose first block one read starts loading ahead of need.
const PREFETCH_SEGMENTS: usize = 16;

/// Bytes `from..to` of object `key` by a range GET, checked to be whole.
async fn load_range(store: Arc<dyn ObjectStore>, key: String, from: u64, to: u64) -> Result<Bytes> {
    let bytes = store
        .get_range(&Path::from(key.as_str()), from..to)
        .await
        .map_err(|source| Error::ObjectStore {
            op: "GET",
            key: key.clone(),
            source,
        })?;
    if bytes.len() as u64 != to - from {
        return Err(Error::CorruptObject {
            key,
            reason: format!(
                "range {from}..{to} returned {} bytes (object shorter than its segment rows say)",
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}
