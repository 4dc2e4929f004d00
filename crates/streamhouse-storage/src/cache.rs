//! Read caches: objects this process wrote recently, an LRU of fixed-size
//! aligned blocks of older objects, and the segment rows of partitions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use streamhouse_metadata::{Segment, TopicId};
use tokio::sync::OnceCell;

/// Whole objects written by this process, newest kept, bounded in bytes.
/// Reads of just-written data never touch the object store.
#[derive(Debug)]
pub struct RecentObjects {
    capacity: usize,
    inner: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    bytes: usize,
    order: VecDeque<Arc<str>>,
    objects: HashMap<Arc<str>, Bytes>,
}

impl RecentObjects {
    /// Keeps at most `capacity` bytes of objects.
    pub fn new(capacity: usize) -> Self {
        RecentObjects {
            capacity,
            inner: Mutex::new(Recent::default()),
        }
    }

    /// Remembers an object, evicting the oldest ones over capacity.
    pub fn insert(&self, key: &str, object: Bytes) {
        if object.len() > self.capacity {
            return;
        }
        let mut r = self.inner.lock().expect("recent objects lock");
        let key: Arc<str> = key.into();
        r.bytes += object.len();
        if let Some(old) = r.objects.insert(key.clone(), object) {
            r.bytes -= old.len();
        } else {
            r.order.push_back(key);
        }
        while r.bytes > self.capacity {
            let Some(oldest) = r.order.pop_front() else {
                break;
            };
            if let Some(b) = r.objects.remove(&oldest) {
                r.bytes -= b.len();
            }
        }
    }

    /// The bytes `start..end` of an object, if it is held.
    pub fn get_range(&self, key: &str, start: u64, end: u64) -> Option<Bytes> {
        let r = self.inner.lock().expect("recent objects lock");
        let object = r.objects.get(key)?;
        (end as usize <= object.len()).then(|| object.slice(start as usize..end as usize))
    }
}

type BlockKey = (Arc<str>, u64);

/// An LRU cache of `block_size`-aligned blocks of objects, bounded in bytes
/// and shared by all readers. Concurrent misses of one block load it once.
#[derive(Debug)]
pub struct BlockCache {
    block_size: u64,
    capacity: usize,
    inner: Mutex<Blocks>,
}

#[derive(Debug)]
struct Blocks {
    bytes: usize,
    lru: lru::LruCache<BlockKey, Arc<OnceCell<Bytes>>>,
    hits: u64,
    misses: u64,
}

/// Hit and miss counts of a [`BlockCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes: usize,
}

impl BlockCache {
    /// A cache of at most `capacity` bytes in blocks of `block_size` bytes.
    pub fn new(block_size: u64, capacity: usize) -> Self {
        BlockCache {
            block_size: block_size.max(1),
            capacity,
            inner: Mutex::new(Blocks {
                bytes: 0,
                lru: lru::LruCache::unbounded(),
                hits: 0,
                misses: 0,
            }),
        }
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let b = self.inner.lock().expect("block cache lock");
        CacheStats {
            hits: b.hits,
            misses: b.misses,
            bytes: b.bytes,
        }
    }

    /// The bytes `start..end` of object `key` of `object_size` bytes, from
    /// cached blocks or loaded with `load(block_start, block_end)`.
    pub async fn get_range<F, Fut, E>(
        &self,
        key: &str,
        object_size: u64,
        start: u64,
        end: u64,
        load: F,
    ) -> Result<Bytes, E>
    where
        F: Fn(u64, u64) -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let first = start / self.block_size;
        let last = (end.max(start + 1) - 1) / self.block_size;
        let key: Arc<str> = key.into();
        let mut parts = Vec::with_capacity((last - first + 1) as usize);
        for block in first..=last {
            let (block_start, block_end) = self.bounds(block, object_size);
            let cell = self.cell(&key, block);
            let bytes = self.fill(&cell, || load(block_start, block_end)).await?;
            let from = start.max(block_start) - block_start;
            let to = end.min(block_end) - block_start;
            parts.push(bytes.slice(from as usize..to as usize));
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Bytes::from(parts.concat())
        })
    }

    /// Starts loading, in a background task, the block of object `key`
    /// holding byte `at`, unless it is cached or being loaded; a read of
    /// it meanwhile waits for that load. A failed load is forgotten (the
    /// next read tries again and reports it). Counts no hit or miss.
    pub fn prefetch<F, Fut, E>(self: &Arc<Self>, key: &str, object_size: u64, at: u64, load: F)
    where
        F: FnOnce(u64, u64) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
    {
        let block = at / self.block_size;
        let (block_start, block_end) = self.bounds(block, object_size);
        if block_start >= block_end {
            return;
        }
        let cell = {
            let mut b = self.inner.lock().expect("block cache lock");
            let id = (Arc::<str>::from(key), block);
            if b.lru.contains(&id) {
                return;
            }
            let cell = Arc::new(OnceCell::new());
            b.lru.put(id, cell.clone());
            cell
        };
        let cache = self.clone();
        tokio::spawn(async move {
            let _ = cache.fill(&cell, || load(block_start, block_end)).await;
        });
    }

    /// Bytes `start..end` of block `block` of an object of `object_size`
    /// bytes.
    fn bounds(&self, block: u64, object_size: u64) -> (u64, u64) {
        let start = block * self.block_size;
        (start, (start + self.block_size).min(object_size))
    }

    /// The bytes of a block's cell, loaded with `load` unless it holds them
    /// or another load is under way; the bytes a load adds are counted.
    async fn fill<Fut, E>(
        &self,
        cell: &OnceCell<Bytes>,
        load: impl FnOnce() -> Fut,
    ) -> Result<Bytes, E>
    where
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let mut loaded = false;
        let bytes = cell
            .get_or_try_init(|| {
                loaded = true;
                load()
            })
            .await?
            .clone();
        if loaded {
            self.account(bytes.len());
        }
        Ok(bytes)
    }

    fn cell(&self, key: &Arc<str>, block: u64) -> Arc<OnceCell<Bytes>> {
        let mut b = self.inner.lock().expect("block cache lock");
        let id = (key.clone(), block);
        if let Some(cell) = b.lru.get(&id) {
            let cell = cell.clone();
            if cell.initialized() {
                b.hits += 1;
                metrics::counter!("streamhouse_read_cache_hits_total").increment(1);
            }
            return cell;
        }
        b.misses += 1;
        metrics::counter!("streamhouse_read_cache_misses_total").increment(1);
        let cell = Arc::new(OnceCell::new());
        b.lru.put(id, cell.clone());
        cell
    }

    fn account(&self, len: usize) {
        let mut b = self.inner.lock().expect("block cache lock");
        b.bytes += len;
        while b.bytes > self.capacity {
            let Some((_, cell)) = b.lru.pop_lru() else {
                break;
            };
            if let Some(bytes) = cell.get() {
                b.bytes -= bytes.len();
            }
        }
    }
}

/// Segment rows of one partition by base offset.
type SegmentIndex = BTreeMap<i64, Arc<Segment>>;

/// Segment rows of partitions, bounded in rows: least recently read
/// partitions are dropped first, and rows below a partition's log start
/// as soon as a read sees it. A committed segment row only changes when
/// compaction replaces it (the replacer forgets the partition).
#[derive(Debug)]
pub(crate) struct SegmentCache {
    max_rows: usize,
    inner: Mutex<SegmentRows>,
}

#[derive(Debug)]
struct SegmentRows {
    rows: usize,
    partitions: lru::LruCache<(TopicId, u32), SegmentIndex>,
}

/// Sizes of a reader's segment row cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentCacheStats {
    /// Segment rows held.
    pub rows: usize,
    /// Partitions with rows held.
    pub partitions: usize,
}

impl SegmentCache {
    /// A cache of at most `max_rows` rows (at least one).
    pub(crate) fn new(max_rows: usize) -> Self {
        SegmentCache {
            max_rows: max_rows.max(1),
            inner: Mutex::new(SegmentRows {
                rows: 0,
                partitions: lru::LruCache::unbounded(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SegmentRows> {
        self.inner.lock().expect("segment cache lock")
    }

    /// Current sizes.
    pub(crate) fn stats(&self) -> SegmentCacheStats {
        let c = self.lock();
        SegmentCacheStats {
            rows: c.rows,
            partitions: c.partitions.len(),
        }
    }

    /// The cached segment holding `offset` of a partition.
    pub(crate) fn find(&self, key: (TopicId, u32), offset: i64) -> Option<Arc<Segment>> {
        let mut c = self.lock();
        c.partitions
            .get(&key)?
            .range(..=offset)
            .next_back()
            .filter(|(_, s)| s.last_offset >= offset)
            .map(|(_, s)| s.clone())
    }

    /// Adds rows of a partition being read at `reading_at`, then drops
    /// rows over the bound: whole partitions least recently read first,
    /// then this partition's rows before `reading_at`, then its rows
    /// farthest ahead.
    pub(crate) fn insert(&self, key: (TopicId, u32), rows: Vec<Segment>, reading_at: i64) {
        let mut c = self.lock();
        let mut added = 0;
        let index = c.partitions.get_or_insert_mut(key, SegmentIndex::new);
        for s in rows {
            if index.insert(s.base_offset, Arc::new(s)).is_none() {
                added += 1;
            }
        }
        c.rows += added;
        let mut evicted = 0;
        while c.rows > self.max_rows {
            match c.partitions.peek_lru() {
                Some((lru, _)) if *lru != key => {
                    let (_, index) = c.partitions.pop_lru().expect("an LRU partition");
                    c.rows -= index.len();
                    evicted += index.len();
                }
                _ => break,
            }
        }
        // Still over: this partition, the most recently read, is the only
        // one left.
        if c.rows > self.max_rows {
            let max_rows = self.max_rows;
            let index = c.partitions.get_mut(&key).expect("just inserted");
            let before = index.len();
            // Rows wholly before the read position, oldest first.
            while index.len() > max_rows {
                match index.first_key_value() {
                    Some((&base, s)) if s.last_offset < reading_at => {
                        index.remove(&base);
                    }
                    _ => break,
                }
            }
            // Then the rows farthest ahead, keeping the one being read.
            while index.len() > max_rows {
                match index.last_key_value() {
                    Some((&base, _)) if base > reading_at => {
                        index.remove(&base);
                    }
                    _ => break,
                }
            }
            let dropped = before - index.len();
            c.rows -= dropped;
            evicted += dropped;
        }
        if evicted > 0 {
            metrics::counter!("streamhouse_segment_cache_evictions_total")
                .increment(evicted as u64);
        }
    }

    /// Drops a partition's rows that end before `log_start` (removed by
    /// retention).
    pub(crate) fn trim_below(&self, key: (TopicId, u32), log_start: i64) {
        let mut c = self.lock();
        let Some(index) = c.partitions.peek_mut(&key) else {
            return;
        };
        let before = index.len();
        while let Some((&base, s)) = index.first_key_value() {
            if s.last_offset >= log_start {
                break;
            }
            index.remove(&base);
        }
        let dropped = before - index.len();
        if index.is_empty() {
            c.partitions.pop(&key);
        }
        c.rows -= dropped;
    }

    /// Drops a partition's rows.
    pub(crate) fn forget(&self, key: (TopicId, u32)) {
        let mut c = self.lock();
        if let Some(index) = c.partitions.pop(&key) {
            c.rows -= index.len();
        }
    }

    /// Drops the rows of every partition of a topic (deleted).
    pub(crate) fn forget_topic(&self, topic_id: TopicId) {
        let mut c = self.lock();
        let keys: Vec<(TopicId, u32)> = c
            .partitions
            .iter()
            .filter(|((id, _), _)| *id == topic_id)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(index) = c.partitions.pop(&key) {
                c.rows -= index.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn blocks_are_loaded_once_and_evicted_by_size() {
        let object: Bytes = (0..100u8).collect::<Vec<_>>().into();
        let cache = BlockCache::new(16, 40);
        let loads = AtomicUsize::new(0);
        let load = |s: u64, e: u64| {
            loads.fetch_add(1, Ordering::SeqCst);
            let o = object.clone();
            async move { Ok::<_, ()>(o.slice(s as usize..e as usize)) }
        };
        // Spans blocks 0 and 1.
        let got = cache.get_range("k", 100, 10, 20, load).await.unwrap();
        assert_eq!(&got[..], &object[10..20]);
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        let got = cache.get_range("k", 100, 17, 30, load).await.unwrap();
        assert_eq!(&got[..], &object[17..30]);
        assert_eq!(loads.load(Ordering::SeqCst), 2, "both blocks cached");
        // The last block is short (96..100).
        let got = cache.get_range("k", 100, 96, 100, load).await.unwrap();
        assert_eq!(&got[..], &object[96..100]);
        // 16 + 16 + 4 = 36 bytes fit; one more block evicts the oldest.
        cache.get_range("k", 100, 40, 41, load).await.unwrap();
        assert!(cache.stats().bytes <= 40);
        assert_eq!(cache.stats().hits, 1, "17..30 lies in block 1 alone");
    }

    fn seg(base: i64, last: i64) -> Segment {
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

    /// Segments of 10 offsets from `first` to `last` (exclusive), by tens.
    fn segs(from: i64, to: i64) -> Vec<Segment> {
        (from / 10..to / 10)
            .map(|i| seg(i * 10, i * 10 + 9))
            .collect()
    }

    #[test]
    fn segment_rows_are_bounded_lru_over_partitions() {
        let c = SegmentCache::new(10);
        c.insert((1, 0), segs(0, 40), 0);
        c.insert((1, 1), segs(0, 40), 0);
        assert_eq!(
            c.stats(),
            SegmentCacheStats {
                rows: 8,
                partitions: 2
            }
        );
        assert!(c.find((1, 0), 15).is_some(), "(1, 0) read last");
        c.insert((2, 0), segs(0, 50), 0);
        // (1, 1) was least recently read: dropped whole.
        assert_eq!(
            c.stats(),
            SegmentCacheStats {
                rows: 9,
                partitions: 2
            }
        );
        assert!(c.find((1, 1), 5).is_none());
        assert_eq!(c.find((2, 0), 42).unwrap().base_offset, 40);
        // One partition alone over the bound keeps the rows it reads at.
        c.insert((3, 0), segs(0, 200), 150);
        assert!(c.stats().rows <= 10, "{:?}", c.stats());
        assert_eq!(c.stats().partitions, 1);
        assert_eq!(c.find((3, 0), 155).unwrap().base_offset, 150);
        assert!(
            c.find((3, 0), 5).is_none(),
            "rows behind the reader go first"
        );
    }

    #[test]
    fn segment_rows_below_the_log_start_and_of_deleted_topics_are_dropped() {
        let c = SegmentCache::new(100);
        c.insert((1, 0), segs(0, 50), 0);
        c.insert((1, 1), segs(0, 20), 0);
        c.insert((2, 0), segs(0, 20), 0);
        c.trim_below((1, 0), 25);
        assert_eq!(c.stats().rows, 3 + 2 + 2);
        assert!(
            c.find((1, 0), 25).is_some(),
            "the segment holding the log start stays"
        );
        c.trim_below((1, 1), 20);
        assert_eq!(
            c.stats(),
            SegmentCacheStats {
                rows: 5,
                partitions: 2
            }
        );
        c.forget_topic(1);
        assert_eq!(
            c.stats(),
            SegmentCacheStats {
                rows: 2,
                partitions: 1
            }
        );
        c.forget((2, 0));
        assert_eq!(c.stats(), SegmentCacheStats::default());
    }

    #[test]
    fn recent_objects_are_bounded() {
        let r = RecentObjects::new(10);
        r.insert("a", Bytes::from_static(b"123456"));
        r.insert("b", Bytes::from_static(b"7890"));
        assert_eq!(&r.get_range("a", 1, 3).unwrap()[..], b"23");
        r.insert("c", Bytes::from_static(b"xy"));
        assert!(r.get_range("a", 0, 1).is_none(), "oldest evicted");
        assert_eq!(&r.get_range("b", 0, 4).unwrap()[..], b"7890");
        assert!(r.get_range("b", 0, 5).is_none(), "out of range");
        r.insert("huge", Bytes::from(vec![0; 11]));
        assert!(r.get_range("huge", 0, 1).is_none());
    }
}
