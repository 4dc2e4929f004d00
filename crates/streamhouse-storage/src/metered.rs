//! An object store decorator that counts every request, by operation and
//! result, and the bytes moved: `streamhouse_object_store_requests_total
//! {op, result}` and `streamhouse_object_store_bytes_total{op}`.
//!
//! Wrapping the store once counts every caller alike: the write
//! pipeline's PUTs, the reader's range GETs, the GC's LISTs and DELETEs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// Counts the requests of the store it wraps; see the module docs.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(MeteredStore { inner })
    }
}

fn count<T>(op: &'static str, result: &object_store::Result<T>) {
    let result = match result {
        Ok(_) => "ok",
        Err(object_store::Error::NotFound { .. }) => "not_found",
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => "conflict",
        Err(_) => "error",
    };
    metrics::counter!("streamhouse_object_store_requests_total", "op" => op, "result" => result)
        .increment(1);
}

fn bytes(op: &'static str, n: u64) {
    metrics::counter!("streamhouse_object_store_bytes_total", "op" => op).increment(n);
}

/// Counts one LIST when `items` ends: `error` if any item failed.
fn counted_list<T: Send + 'static>(
    items: BoxStream<'static, object_store::Result<T>>,
) -> BoxStream<'static, object_store::Result<T>> {
    let failed = Arc::new(AtomicBool::new(false));
    let seen = failed.clone();
    items
        .inspect(move |item| {
            if item.is_err() {
                seen.store(true, Ordering::Relaxed);
            }
        })
        .chain(
            futures::stream::once(async move {
                let result: object_store::Result<()> = if failed.load(Ordering::Relaxed) {
                    Err(object_store::Error::Generic {
                        store: "metered",
                        source: "list failed".into(),
                    })
                } else {
                    Ok(())
                };
                count("list", &result);
            })
            .filter_map(|()| async { None }),
        )
        .boxed()
}

impl fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let size = payload.content_length() as u64;
        let result = self.inner.put_opts(location, payload, opts).await;
        count("put", &result);
        if result.is_ok() {
            bytes("put", size);
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let result = self.inner.put_multipart_opts(location, opts).await;
        count("put_multipart", &result);
        result
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        let result = self.inner.get_opts(location, options).await;
        count(if head { "head" } else { "get" }, &result);
        if let (Ok(r), false) = (&result, head) {
            bytes("get", r.range.end - r.range.start);
        }
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner
            .delete_stream(locations)
            .inspect(|result| count("delete", result))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        counted_list(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        counted_list(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let result = self.inner.list_with_delimiter(prefix).await;
        count("list", &result);
        result
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let result = self.inner.copy_opts(from, to, options).await;
        count("copy", &result);
        result
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let result = self.inner.rename_opts(from, to, options).await;
        count("rename", &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    use futures::TryStreamExt;
    use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder};
    use metrics::{SharedString, Unit};
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    /// Counters by "name label=value,…".
    #[derive(Default)]
    struct Counters(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

    struct Cell(Arc<AtomicU64>);

    impl CounterFn for Cell {
        fn increment(&self, n: u64) {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
        fn absolute(&self, n: u64) {
            self.0.store(n, Ordering::Relaxed);
        }
    }

    impl Recorder for Counters {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{} {}", key.name(), labels.join(","));
            let cell = self.0.lock().unwrap().entry(name).or_default().clone();
            Counter::from_arc(Arc::new(Cell(cell)))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn every_request_is_counted_by_op_and_result() {
        let recorder = Counters::default();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let store = MeteredStore::new(Arc::new(InMemory::new()));
                let key = Path::from("objects/a");
                store.put(&key, vec![0u8; 100].into()).await.unwrap();
                assert_eq!(store.get_range(&key, 10..30).await.unwrap().len(), 20);
                store.get(&Path::from("objects/missing")).await.unwrap_err();
                let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
                assert_eq!(listed.len(), 1);
                store.delete(&key).await.unwrap();
            });
        });
        let seen: BTreeMap<String, u64> = recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect();
        let expect = [
            (
                "streamhouse_object_store_requests_total op=put,result=ok",
                1,
            ),
            (
                "streamhouse_object_store_requests_total op=get,result=ok",
                1,
            ),
            (
                "streamhouse_object_store_requests_total op=get,result=not_found",
                1,
            ),
            (
                "streamhouse_object_store_requests_total op=list,result=ok",
                1,
            ),
            (
                "streamhouse_object_store_requests_total op=delete,result=ok",
                1,
            ),
            ("streamhouse_object_store_bytes_total op=put", 100),
            ("streamhouse_object_store_bytes_total op=get", 20),
        ];
        for (name, n) in expect {
            assert_eq!(seen.get(name), Some(&n), "{name} in {seen:#?}");
        }
    }
}
