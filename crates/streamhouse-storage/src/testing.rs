//! Test helpers (feature `testing`): a fault-injecting object store.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Permits of the PUT gate: each PUT takes one for a moment; holding all
/// of them holds every PUT. (`acquire_many` takes a `u32`.)
const GATE_PERMITS: u32 = 1 << 30;

/// Wraps an object store; its PUTs can be made to fail (always, or the next
/// N) or to wait until released, and its GETs slow; it counts the most GETs
/// it saw running at once.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    fail_puts: AtomicBool,
    fail_next_puts: AtomicU32,
    gate: Semaphore,
    get_delay_ms: AtomicU32,
    gets_running: AtomicU32,
    most_gets_running: AtomicU32,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner,
            fail_puts: AtomicBool::new(false),
            fail_next_puts: AtomicU32::new(0),
            gate: Semaphore::new(GATE_PERMITS as usize),
            get_delay_ms: AtomicU32::new(0),
            gets_running: AtomicU32::new(0),
            most_gets_running: AtomicU32::new(0),
        })
    }

    /// Makes every PUT fail (`true`) or pass (`false`).
    pub fn fail_puts(&self, on: bool) {
        self.fail_puts.store(on, Ordering::SeqCst);
    }

    /// Makes the next `n` PUTs fail.
    pub fn fail_next_puts(&self, n: u32) {
        self.fail_next_puts.store(n, Ordering::SeqCst);
    }

    /// Makes every GET take at least `delay` (whole milliseconds).
    pub fn slow_gets(&self, delay: std::time::Duration) {
        let ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        self.get_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// The most GETs that ran at once so far.
    pub fn most_gets_running(&self) -> u32 {
        self.most_gets_running.load(Ordering::SeqCst)
    }

    /// Holds every PUT until the returned guard is dropped.
    pub async fn hold_puts(&self) -> SemaphorePermit<'_> {
        self.gate
            .acquire_many(GATE_PERMITS)
            .await
            .expect("gate is never closed")
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        drop(self.gate.acquire().await.expect("gate is never closed"));
        let fail_next = self
            .fail_next_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail_next || self.fail_puts.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "injected PUT failure".into(),
            });
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let running = self.gets_running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_gets_running.fetch_max(running, Ordering::SeqCst);
        // Counted out when the GET ends, however it ends (also cancelled).
        let _running = Running(&self.gets_running);
        let delay = self.get_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay.into())).await;
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Takes one off a count of running requests when dropped.
struct Running<'a>(&'a AtomicU32);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
