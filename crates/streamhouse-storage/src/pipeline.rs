//! The write pipeline: appends to any partitions are buffered and flushed
//! together as ONE object per flush, then committed in ONE metadata
//! transaction that assigns their offsets.
//!
//! ```text
//! submit(topic, partition, batch) ──▶ pending (bounded by max_buffered_bytes)
//!        group commit (below) or flush_bytes:
//! flusher:   take pending ─▶ encode one object ─▶ spawn PUT (create-only, unique key)
//! committer: in flush order: await PUT ─▶ commit_object ─▶ reply base offsets
//! ```
//!
//! Flushes are group commits, not timed: while no flush is unfinished,
//! buffered batches flush as soon as they arrive (after `linger`, zero by
//! default); while one is uploading or committing, they gather into the
//! next flush until it finishes or they reach an eighth of `flush_bytes`.
//! At low load a batch waits for one upload and one commit; under load
//! objects grow with the load and the rate of PUTs and commits stays
//! bounded by their latency, while big flushes overlap: uploads of several
//! flushes run at once (up to `max_inflight_flushes`);
//! commits apply strictly in flush order, so batches appended one after the
//! other to a partition get increasing offsets. A failed upload or commit
//! fails exactly the appends of that flush with a retryable error
//! ([`Error::FlushFailed`]: nothing was written); its object, if written,
//! is referenced by no segment and is left for the GC.
//!
//! A commit whose connection failed while `COMMIT` was being sent may have
//! applied. The committer settles it before answering
//! ([`streamhouse_metadata::LogStore::settle_object`]): not committed is a
//! plain failed flush; committed answers the appends of chunks without
//! idempotent batches with their offsets (from the object's segment rows),
//! and the others with [`Error::OutcomeUnknown`], as it does every append
//! when settling fails.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn object_store::ObjectStore>,
//! #               metadata: std::sync::Arc<dyn streamhouse_metadata::MetadataStore>,
//! #               batch: bytes::Bytes) -> Result<(), streamhouse_storage::Error> {
//! use streamhouse_storage::{PipelineConfig, WritePipeline};
//! let pipeline = WritePipeline::new(store, metadata, PipelineConfig::default())?;
//! let appended = pipeline.append("orders", 0, batch).await?;
//! println!("base offset {}", appended.base_offset);
//! pipeline.close().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStore, PutMode, PutOptions, path::Path};
use streamhouse_core::{BatchHeader, ProduceRules, validate_produced};
use streamhouse_metadata::{
    BatchCommit, BatchOutcome, ChunkCommit, ChunkRejected, MetadataStore, ObjectCommit,
    ProducerBatch, Segment, Topic, TopicId,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cache::RecentObjects;
use crate::error::{Error, Result};
use crate::object::ObjectBuilder;
use crate::topics::TopicCache;

/// Settings of a [`WritePipeline`].
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// How long the first batch waits for others to join its flush when
    /// the pipeline is idle (no flush unfinished). Default 0:
    /// it flushes at once. Under load batches wait for a running flush
    /// instead of a timer (see the module docs).
    pub linger: Duration,
    /// Buffered bytes that start a flush at once. Default 8 MiB.
    pub flush_bytes: usize,
    /// Most bytes buffered or in flight; appends wait beyond it
    /// (backpressure). Default 64 MiB.
    pub max_buffered_bytes: usize,
    /// Largest batch accepted. Default 8 MiB; at most `max_buffered_bytes`.
    pub max_batch_bytes: usize,
    /// Flushes uploading or committing at once. Default 4.
    pub max_inflight_flushes: usize,
    /// Bytes of recently written objects kept in memory for reads.
    /// Default 64 MiB.
    pub recent_objects_bytes: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            linger: Duration::ZERO,
            flush_bytes: 8 << 20,
            max_buffered_bytes: 64 << 20,
            max_batch_bytes: 8 << 20,
            max_inflight_flushes: 4,
            recent_objects_bytes: 64 << 20,
        }
    }
}

impl PipelineConfig {
    fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::Metadata(
                streamhouse_metadata::Error::InvalidArgument {
                    field: "pipeline config",
                    reason,
                },
            ))
        };
        if self.flush_bytes == 0 || self.max_inflight_flushes == 0 {
            return bad("flush_bytes and max_inflight_flushes must be positive".into());
        }
        if self.max_batch_bytes == 0 || self.max_batch_bytes > self.max_buffered_bytes {
            return bad(format!(
                "max_batch_bytes ({}) must be positive and at most max_buffered_bytes ({})",
                self.max_batch_bytes, self.max_buffered_bytes
            ));
        }
        if self.max_buffered_bytes > u32::MAX as usize {
            return bad("max_buffered_bytes must be below 4 GiB".into());
        }
        Ok(())
    }
}

/// Where an appended batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// Offsets the batch occupies (`last_offset_delta + 1`).
    pub offset_span: i64,
    /// The batch (of an idempotent producer) had been committed before;
    /// `base_offset` is where, and it was not committed again.
    pub duplicate: bool,
}

/// Counters of a pipeline since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Flushes attempted (each writes one object).
    pub flushes: u64,
    /// Objects PUT successfully.
    pub objects_written: u64,
    /// Bytes of objects PUT successfully.
    pub bytes_written: u64,
    /// Flushes committed.
    pub commits: u64,
    /// Flushes whose upload or commit failed.
    pub failed_flushes: u64,
}

#[derive(Default)]
struct Counters {
    flushes: AtomicU64,
    objects_written: AtomicU64,
    bytes_written: AtomicU64,
    commits: AtomicU64,
    failed_flushes: AtomicU64,
}

/// Batches one flush is gathering, per partition in (topic id, partition)
/// order, which is the chunk order of the object.
#[derive(Default)]
struct Pending {
    partitions: BTreeMap<(TopicId, u32), PartitionBuf>,
    bytes: usize,
    since: Option<Instant>,
    closed: bool,
    /// Flushes taken but not yet answered (uploading or committing).
    unfinished: usize,
}

struct PartitionBuf {
    topic: Arc<str>,
    batches: Vec<Waiting>,
}

struct Waiting {
    partition: u32,
    batch: Bytes,
    header: BatchHeader,
    reply: oneshot::Sender<Result<Appended>>,
    _budget: OwnedSemaphorePermit,
}

/// One flush on its way: its upload and who waits for its commit.
struct Flush {
    started: std::time::Instant,
    key: String,
    object: Bytes,
    commit: ObjectCommit,
    upload: JoinHandle<Result<()>>,
    waiters: Vec<(Arc<str>, Vec<Waiting>)>,
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    metadata: Arc<dyn MetadataStore>,
    config: PipelineConfig,
    topics: TopicCache,
    recent: Arc<RecentObjects>,
    pending: Mutex<Pending>,
    wake: Notify,
    budget: Arc<Semaphore>,
    counters: Counters,
    /// Counts commits, so readers waiting for new records wake at once.
    committed: tokio::sync::watch::Sender<u64>,
}

/// Appends record batches to partitions; the design is in the `pipeline` module docs
/// (`cargo doc --document-private-items`).
pub struct WritePipeline {
    shared: Arc<Shared>,
    tasks: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// An accepted append waiting for its commit; resolves to where it landed.
#[must_use = "an append is only durable once this resolves to Ok"]
pub struct Appending {
    reply: oneshot::Receiver<Result<Appended>>,
}

impl Future for Appending {
    type Output = Result<Appended>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.reply)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// The produce-side checks for one partition of a topic; made by
/// [`WritePipeline::validator`].
#[derive(Clone, Debug)]
pub struct BatchValidator {
    topic: Arc<Topic>,
    partition: u32,
    rules: ProduceRules,
}

impl BatchValidator {
    /// Fully validates one batch sent by a producer (see
    /// [`streamhouse_core::validate`]): CPU work only, one pass over the
    /// records plus a bounded decompression for compressed batches.
    pub fn validate(&self, batch: Bytes) -> Result<ValidBatch> {
        let header =
            validate_produced(&batch, &self.rules).map_err(|source| Error::InvalidBatch {
                topic: self.topic.name.clone(),
                partition: self.partition,
                source,
            })?;
        Ok(ValidBatch {
            topic: self.topic.clone(),
            partition: self.partition,
            batch,
            header,
        })
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// The partition batches are checked for.
    pub fn partition(&self) -> u32 {
        self.partition
    }
}

/// A record batch that passed [`BatchValidator::validate`]; only
/// validation makes one, so [`WritePipeline::submit_valid`] trusts it.
#[derive(Debug)]
pub struct ValidBatch {
    topic: Arc<Topic>,
    partition: u32,
    batch: Bytes,
    header: BatchHeader,
}

impl WritePipeline {
    /// Starts a pipeline writing objects to `store` and committing to
    /// `metadata`. Must be called within a Tokio runtime.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        config: PipelineConfig,
    ) -> Result<Self> {
        config.validate()?;
        let (tx, rx) = mpsc::channel(config.max_inflight_flushes);
        let shared = Arc::new(Shared {
            store,
            topics: TopicCache::new(metadata.clone()),
            metadata,
            recent: Arc::new(RecentObjects::new(config.recent_objects_bytes)),
            budget: Arc::new(Semaphore::new(config.max_buffered_bytes)),
            config,
            pending: Mutex::default(),
            wake: Notify::new(),
            counters: Counters::default(),
            committed: tokio::sync::watch::Sender::new(0),
        });
        let tasks = vec![
            tokio::spawn(run_flusher(shared.clone(), tx)),
            tokio::spawn(run_committer(shared.clone(), rx)),
        ];
        Ok(WritePipeline {
            shared,
            tasks: tokio::sync::Mutex::new(tasks),
        })
    }

    /// The objects this pipeline wrote recently, for a
    /// [`Reader`](crate::Reader) in the same process to serve from memory.
    pub fn recent_objects(&self) -> Arc<RecentObjects> {
        self.shared.recent.clone()
    }

    /// Changes after every commit of this pipeline: a long-polling reader
    /// waits on it for records this process writes.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    /// Counters since the pipeline started.
    pub fn stats(&self) -> PipelineStats {
        let c = &self.shared.counters;
        PipelineStats {
            flushes: c.flushes.load(Ordering::Relaxed),
            objects_written: c.objects_written.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            failed_flushes: c.failed_flushes.load(Ordering::Relaxed),
        }
    }

    /// Appends one record batch and waits until it is committed.
    pub async fn append(&self, topic: &str, partition: u32, batch: Bytes) -> Result<Appended> {
        self.submit(topic, partition, batch).await?.await
    }

    /// Validates and buffers one record batch (waiting while the buffer is
    /// full) and returns a future of its commit, so one task can keep many
    /// appends in flight. The batch must be one complete RecordBatch v2
    /// that passes [`validate_produced`];
    /// its base offset is ignored (objects store 0).
    pub async fn submit(&self, topic: &str, partition: u32, batch: Bytes) -> Result<Appending> {
        let valid = self.validator(topic, partition).await?.validate(batch)?;
        self.submit_valid(valid).await
    }

    /// The checks a batch for `partition` of `topic` must pass, with the
    /// topic resolved (cached). The returned validator is cheap to clone
    /// and can run on any thread, so callers validate large or compressed
    /// batches in parallel, off the async reactor.
    pub async fn validator(&self, topic: &str, partition: u32) -> Result<BatchValidator> {
        let t = self.shared.topics.resolve(topic, partition).await?;
        let require_keys = t.is_compacted();
        Ok(BatchValidator {
            rules: ProduceRules {
                max_batch_bytes: self.shared.config.max_batch_bytes,
                require_keys,
            },
            topic: t,
            partition,
        })
    }

    /// Forgets what this pipeline cached about `topic` (its id, partition
    /// count and config), so the next append reads it again: call it after
    /// altering or deleting the topic.
    pub fn invalidate_topic(&self, topic: &str) {
        self.shared.topics.invalidate(topic);
    }

    /// Buffers a batch that passed [`BatchValidator::validate`] (waiting
    /// while the buffer is full) and returns a future of its commit.
    pub async fn submit_valid(&self, valid: ValidBatch) -> Result<Appending> {
        let budget = self
            .shared
            .budget
            .clone()
            .acquire_many_owned(valid.batch.len() as u32)
            .await
            .map_err(|_| Error::Closed)?;
        let mut p = self.shared.pending.lock().expect("pending lock");
        self.shared.buffer(&mut p, valid, budget)
    }

    /// Buffers batches that passed [`BatchValidator::validate`], in order,
    /// and returns a future of each one's commit. When the buffer has room
    /// for all of them they join the same flush; otherwise each waits for
    /// room in turn, as [`submit_valid`](Self::submit_valid) does.
    pub async fn submit_all(&self, batches: Vec<ValidBatch>) -> Vec<Result<Appending>> {
        let total: usize = batches.iter().map(|b| b.batch.len()).sum();
        let room = u32::try_from(total)
            .ok()
            .and_then(|n| self.shared.budget.clone().try_acquire_many_owned(n).ok());
        let Some(mut room) = room else {
            let mut out = Vec::with_capacity(batches.len());
            for valid in batches {
                out.push(self.submit_valid(valid).await);
            }
            return out;
        };
        let mut p = self.shared.pending.lock().expect("pending lock");
        batches
            .into_iter()
            .map(|valid| {
                let budget = room
                    .split(valid.batch.len())
                    .expect("the permits of the whole set");
                self.shared.buffer(&mut p, valid, budget)
            })
            .collect()
    }

    /// Flushes and commits everything buffered, then stops the pipeline.
    /// Appends submitted afterwards fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.shared.close();
        for task in self.tasks.lock().await.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for WritePipeline {
    /// Dropping the pipeline closes it: what is buffered is still flushed
    /// and committed by its tasks, which then stop.
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl Shared {
    /// Adds one batch to the flush being gathered.
    fn buffer(
        &self,
        p: &mut Pending,
        valid: ValidBatch,
        budget: OwnedSemaphorePermit,
    ) -> Result<Appending> {
        let ValidBatch {
            topic: t,
            partition,
            mut batch,
            header,
        } = valid;
        if p.closed {
            return Err(Error::Closed);
        }
        if batch[..8] != [0; 8] {
            let mut owned = batch.to_vec();
            streamhouse_core::set_base_offset(&mut owned, 0);
            batch = owned.into();
        }
        let (reply, rx) = oneshot::channel();
        p.bytes += batch.len();
        p.partitions
            .entry((t.id, partition))
            .or_insert_with(|| PartitionBuf {
                topic: t.name.as_str().into(),
                batches: Vec::new(),
            })
            .batches
            .push(Waiting {
                partition,
                batch,
                header,
                reply,
                _budget: budget,
            });
        if p.since.is_none() {
            p.since = Some(Instant::now());
            self.wake.notify_one();
        } else if p.bytes >= self.config.flush_bytes / OVERLAP_SHARE {
            // Big enough to flush beside an unfinished flush (or full).
            self.wake.notify_one();
        }
        Ok(Appending { reply: rx })
    }

    fn close(&self) {
        self.pending.lock().expect("pending lock").closed = true;
        self.wake.notify_one();
    }
}

/// A flush starts while another is unfinished (uploading or committing)
/// once the batches gathered reach this share of `flush_bytes` (1 MiB of
/// the default 8 MiB): big enough to be worth a PUT of its own, so under
/// load the uploads and commits of consecutive flushes overlap (up to
/// `max_inflight_flushes`), while at low load one flush runs at a time.
/// Measured against one flush at a time: the same latency at 10,000 and
/// 100,000 records/s with fewer PUTs than overlapping small flushes, and
/// `bench pipeline` at the default flush size no longer waits for each
/// flush in turn.
const OVERLAP_SHARE: usize = 8;

async fn run_flusher(shared: Arc<Shared>, flushes: mpsc::Sender<Flush>) {
    loop {
        let (since, closed, full, may_start) = {
            let p = shared.pending.lock().expect("pending lock");
            (
                p.since,
                p.closed,
                p.bytes >= shared.config.flush_bytes,
                p.unfinished == 0 || p.bytes >= shared.config.flush_bytes / OVERLAP_SHARE,
            )
        };
        if !full && !closed {
            match since {
                // Nothing buffered, or flushes are running: the next batch,
                // the end of a flush, a full buffer or close wakes us.
                None => {
                    shared.wake.notified().await;
                    continue;
                }
                Some(_) if !may_start => {
                    shared.wake.notified().await;
                    continue;
                }
                Some(since) if since.elapsed() < shared.config.linger => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(since + shared.config.linger) => {}
                        _ = shared.wake.notified() => continue,
                    }
                }
                Some(_) => {}
            }
        }
        let taken = {
            let mut p = shared.pending.lock().expect("pending lock");
            p.since = None;
            p.bytes = 0;
            let taken = std::mem::take(&mut p.partitions);
            if !taken.is_empty() {
                p.unfinished += 1;
            }
            taken
        };
        if taken.is_empty() {
            if closed {
                return;
            }
            continue;
        }
        let flush = start_flush(&shared, taken);
        if flushes.send(flush).await.is_err() {
            return;
        }
    }
}

/// Encodes the pending batches into one object and starts its upload.
fn start_flush(shared: &Arc<Shared>, taken: BTreeMap<(TopicId, u32), PartitionBuf>) -> Flush {
    let size: usize = taken
        .values()
        .flat_map(|p| p.batches.iter())
        .map(|w| w.batch.len())
        .sum();
    let mut builder = ObjectBuilder::with_capacity(size + 64 * taken.len());
    let mut chunks = Vec::with_capacity(taken.len());
    let mut waiters = Vec::with_capacity(taken.len());
    for ((topic_id, partition), buf) in taken {
        let mut chunk = ChunkCommit {
            topic_id,
            partition,
            byte_start: builder.len() as u64,
            batches: Vec::with_capacity(buf.batches.len()),
        };
        for w in &buf.batches {
            let h = &w.header;
            builder.push_batch(
                topic_id,
                partition,
                &w.batch,
                h.record_count as u64,
                h.base_timestamp,
                h.max_timestamp,
            );
            chunk.batches.push(BatchCommit {
                byte_length: w.batch.len() as u64,
                offset_span: h.offset_span(),
                record_count: i64::from(h.record_count),
                min_timestamp: h.base_timestamp,
                max_timestamp: h.max_timestamp,
                producer: h.has_producer().then_some(ProducerBatch {
                    producer_id: h.producer_id,
                    epoch: h.producer_epoch,
                    base_sequence: h.base_sequence,
                    record_count: h.record_count,
                    transactional: h.attributes.is_transactional(),
                }),
            });
        }
        chunks.push(chunk);
        waiters.push((buf.topic, buf.batches));
    }
    let (object, _) = builder.finish();
    let key = format!("objects/{}.sho", ulid::Ulid::new());
    shared.counters.flushes.fetch_add(1, Ordering::Relaxed);
    let upload = tokio::spawn(upload(shared.store.clone(), key.clone(), object.clone()));
    Flush {
        started: std::time::Instant::now(),
        commit: ObjectCommit {
            object_key: key.clone(),
            size_bytes: object.len() as u64,
            chunks,
        },
        key,
        object,
        upload,
        waiters,
    }
}

/// Writes an object create-only under a new unique key and returns the key.
pub async fn upload_object(store: Arc<dyn ObjectStore>, object: Bytes) -> Result<String> {
    let key = format!("objects/{}.sho", ulid::Ulid::new());
    upload(store, key.clone(), object).await?;
    Ok(key)
}

async fn upload(store: Arc<dyn ObjectStore>, key: String, object: Bytes) -> Result<()> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let started = std::time::Instant::now();
    let result = store
        .put_opts(&Path::from(key.as_str()), object.into(), opts)
        .await;
    metrics::histogram!("streamhouse_upload_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(_) => Ok(()),
        // Keys are unique to this flush: "already exists" means an earlier
        // attempt of this very PUT (retried by the client) landed.
        Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(source) => Err(Error::ObjectStore {
            op: "PUT",
            key,
            source,
        }),
    }
}

async fn run_committer(shared: Arc<Shared>, mut flushes: mpsc::Receiver<Flush>) {
    while let Some(mut flush) = flushes.recv().await {
        let uploaded = match (&mut flush.upload).await {
            Ok(r) => r,
            Err(e) => Err(Error::ObjectStore {
                op: "PUT",
                key: flush.key.clone(),
                source: object_store::Error::Generic {
                    store: "upload task",
                    source: Box::new(e),
                },
            }),
        };
        let c = &shared.counters;
        let committed = match uploaded {
            Ok(()) => {
                c.objects_written.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("streamhouse_objects_written_total").increment(1);
                c.bytes_written
                    .fetch_add(flush.object.len() as u64, Ordering::Relaxed);
                shared.recent.insert(&flush.key, flush.object.clone());
                let started = std::time::Instant::now();
                let committed = shared
                    .metadata
                    .commit_object(&flush.commit)
                    .await
                    .map_err(Error::from);
                metrics::histogram!("streamhouse_commit_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                committed
            }
            Err(e) => Err(e),
        };
        metrics::histogram!("streamhouse_flush_duration_seconds")
            .record(flush.started.elapsed().as_secs_f64());
        match committed {
            Ok(outcome) => {
                c.commits.fetch_add(1, Ordering::Relaxed);
                metrics::histogram!("streamhouse_flush_bytes").record(flush.object.len() as f64);
                shared.committed.send_modify(|n| *n += 1);
                for ((topic, waiting), result) in flush.waiters.into_iter().zip(outcome) {
                    match result {
                        Ok(outcomes) => {
                            for (w, o) in waiting.into_iter().zip(outcomes) {
                                let offset_span = w.header.offset_span();
                                let _ = w.reply.send(match o {
                                    BatchOutcome::Appended { base_offset } => Ok(Appended {
                                        base_offset,
                                        offset_span,
                                        duplicate: false,
                                    }),
                                    BatchOutcome::Duplicate { base_offset } => Ok(Appended {
                                        base_offset,
                                        offset_span,
                                        duplicate: true,
                                    }),
                                    BatchOutcome::Rejected(reason) => Err(Error::Rejected {
                                        topic: topic.to_string(),
                                        partition: w.partition,
                                        reason,
                                    }),
                                });
                            }
                        }
                        Err(ChunkRejected::PartitionGone { partition, .. }) => {
                            shared.topics.invalidate(&topic);
                            for w in waiting {
                                let _ = w.reply.send(Err(Error::TopicDeleted {
                                    topic: topic.to_string(),
                                    partition,
                                }));
                            }
                        }
                    }
                }
            }
            Err(e @ Error::Metadata(streamhouse_metadata::Error::CommitOutcomeUnknown { .. })) => {
                tracing::warn!(object = %flush.key, error = %e, "commit in doubt; settling it");
                let settled = settle(&shared, &flush.key).await;
                reply_settled(&shared, flush, e, settled);
            }
            Err(e) => fail_flush(&shared, flush, e),
        }
        shared.pending.lock().expect("pending lock").unfinished -= 1;
        shared.wake.notify_one();
    }
}

/// Answers every append of a flush that wrote nothing with
/// [`Error::FlushFailed`].
fn fail_flush(shared: &Shared, flush: Flush, e: Error) {
    shared
        .counters
        .failed_flushes
        .fetch_add(1, Ordering::Relaxed);
    metrics::counter!("streamhouse_failed_flushes_total").increment(1);
    tracing::warn!(object = %flush.key, error = %e, "flush failed");
    let e = Arc::new(e);
    for w in flush.waiters.into_iter().flat_map(|(_, w)| w) {
        let _ = w.reply.send(Err(Error::FlushFailed(e.clone())));
    }
}

/// Attempts at settling a commit in doubt, and the wait before the first
/// retry (doubled after each).
const SETTLE_ATTEMPTS: u32 = 3;
const SETTLE_BACKOFF: Duration = Duration::from_millis(100);

/// Whether the commit of `key` applied (its segment rows) or not (`None`),
/// retrying retryable failures of the metadata store.
async fn settle(shared: &Shared, key: &str) -> Result<Option<Vec<Segment>>> {
    let mut wait = SETTLE_BACKOFF;
    let mut attempt = 1;
    loop {
        match shared.metadata.settle_object(key).await {
            Err(e) if e.is_retryable() && attempt < SETTLE_ATTEMPTS => {
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            settled => return settled.map_err(Error::from),
        }
    }
}

/// Answers the appends of a flush whose commit failed with `e` (outcome
/// unknown) once `settled` tells what happened (see the module docs).
fn reply_settled(shared: &Shared, flush: Flush, e: Error, settled: Result<Option<Vec<Segment>>>) {
    let segments = match settled {
        Ok(None) => return fail_flush(shared, flush, e),
        Ok(Some(segments)) => segments,
        Err(settling) => {
            tracing::warn!(object = %flush.key, error = %settling, "settling the commit failed");
            shared
                .counters
                .failed_flushes
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!("streamhouse_failed_flushes_total").increment(1);
            let e = Arc::new(e);
            for w in flush.waiters.into_iter().flat_map(|(_, w)| w) {
                let _ = w.reply.send(Err(Error::OutcomeUnknown(e.clone())));
            }
            return;
        }
    };
    shared.counters.commits.fetch_add(1, Ordering::Relaxed);
    shared.committed.send_modify(|n| *n += 1);
    let e = Arc::new(e);
    for (chunk, (_, waiting)) in flush.commit.chunks.iter().zip(flush.waiters) {
        let plain = chunk.batches.iter().all(|b| b.producer.is_none());
        let segment = segments.iter().find(|s| {
            s.topic_id == chunk.topic_id
                && s.partition == chunk.partition
                && s.byte_start == chunk.byte_start
        });
        match segment.filter(|_| plain) {
            // Every batch of a chunk without producer ids is committed, back
            // to back from the segment's base offset.
            Some(segment) => {
                let mut base_offset = segment.base_offset;
                for w in waiting {
                    let offset_span = w.header.offset_span();
                    let _ = w.reply.send(Ok(Appended {
                        base_offset,
                        offset_span,
                        duplicate: false,
                    }));
                    base_offset += offset_span;
                }
            }
            None => {
                for w in waiting {
                    let _ = w.reply.send(Err(Error::OutcomeUnknown(e.clone())));
                }
            }
        }
    }
}
