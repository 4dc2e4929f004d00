//! Read caches: objects this process wrote recently, and an LRU of
//! fixed-size aligned blocks of older objects.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
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
            let block_start = block * self.block_size;
            let block_end = (block_start + self.block_size).min(object_size);
            let cell = self.cell(&key, block);
            let mut loaded = false;
            let bytes = cell
                .get_or_try_init(|| {
                    loaded = true;
                    load(block_start, block_end)
                })
                .await?
                .clone();
            if loaded {
                self.account(bytes.len());
            }
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
