//! The Producer: key partitioning, batching, LZ4, retries and idempotence.
//!
//! ```text
//! send_record ──▶ partition queue: open batch (records encoded as added)
//!                   │ sealed at batch_size records, max_batch_bytes or batch_timeout
//!                   ▼
//!             sealed batches ──▶ sender task: one Produce request per round,
//!                                 carrying every partition that has sealed
//!                                 batches and no request in flight
//!                                   │ per batch: offset, or retry with backoff
//!                                   ▼
//!                              DeliveryFuture of each record resolves
//! ```
//!
//! Each partition has at most one request in flight, so its batches are
//! committed in the order they were sent, retries included. With
//! idempotence (the default) every batch carries the producer id, epoch and
//! sequence numbers; the agent's commit drops a retried batch that was
//! already committed and answers with its original offset, so retries never
//! duplicate records.
//!
//! ```no_run
//! # async fn demo() -> Result<(), streamhouse_client::Error> {
//! use streamhouse_client::{Producer, ProducerRecord};
//! let producer = Producer::builder().bootstrap("127.0.0.1:50051").build().await?;
//! // Wait for one record's acknowledgement:
//! let sent = producer.send("orders", Some(b"user1"), b"order 1", None).await?;
//! // Or keep many in flight and wait later:
//! let mut pending = Vec::new();
//! for i in 0..1000 {
//!     let record = ProducerRecord::new("orders", format!("order {i}"));
//!     pending.push(producer.send_record(record).await?);
//! }
//! for delivery in pending {
//!     delivery.await?;
//! }
//! producer.close().await?;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use streamhouse_core::{BatchBuilder, Compression, Header};
use streamhouse_metadata::{MetadataStore, ProducerIdentity, TopicPartition};
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterConfig, Source};
use crate::error::{Error, Result, code_is_retryable};
use crate::partitioner::partition_for_key;

/// Producer settings; every field is set through [`ProducerBuilder`].
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    pub agent_group: String,
    pub zone: Option<String>,
    pub batch_size: usize,
    pub batch_timeout: Duration,
    pub compression: Compression,
    pub request_timeout: Duration,
    pub agent_refresh_interval: Duration,
    pub max_retries: u32,
    pub retry_backoff: Duration,
    pub max_buffered_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_request_bytes: usize,
    pub idempotence: bool,
    pub transactional_id: Option<String>,
    pub transaction_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            agent_group: "default".into(),
            zone: None,
            batch_size: 100,
            batch_timeout: Duration::from_millis(100),
            compression: Compression::Lz4,
            request_timeout: Duration::from_secs(30),
            agent_refresh_interval: Duration::from_secs(30),
            max_retries: 3,
            retry_backoff: Duration::from_millis(100),
            max_buffered_bytes: 64 << 20,
            max_batch_bytes: 1 << 20,
            max_request_bytes: 16 << 20,
            idempotence: true,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }
}

/// Builds a [`Producer`]. Either [`metadata_store`](Self::metadata_store) or
/// [`bootstrap`](Self::bootstrap) is required.
#[derive(Default)]
#[must_use]
pub struct ProducerBuilder {
    metadata: Option<Arc<dyn MetadataStore>>,
    bootstrap: Vec<String>,
    config: ProducerConfig,
}

impl ProducerBuilder {
    /// Discover agents and topics through this metadata store (the agents
    /// must share it).
    pub fn metadata_store(mut self, store: Arc<dyn MetadataStore>) -> Self {
        self.metadata = Some(store);
        self
    }

    /// Discover agents and topics through an agent at `host:port`; may be
    /// called several times. Applications then need no database access.
    pub fn bootstrap(mut self, address: impl Into<String>) -> Self {
        self.bootstrap.push(address.into());
        self
    }

    /// Agent group to send to. Default `"default"`.
    pub fn agent_group(mut self, group: impl Into<String>) -> Self {
        self.config.agent_group = group.into();
        self
    }

    /// Prefer agents in this availability zone. Default: none.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.config.zone = Some(zone.into());
        self
    }

    /// Records per batch before it is sent. Default 100.
    pub fn batch_size(mut self, records: usize) -> Self {
        self.config.batch_size = records;
        self
    }

    /// Longest a record waits for its batch to fill before it is sent.
    /// Default 100 ms.
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.config.batch_timeout = timeout;
        self
    }

    /// LZ4 compression of batches on (`true`, the default) or off.
    pub fn compression_enabled(mut self, enabled: bool) -> Self {
        self.config.compression = if enabled {
            Compression::Lz4
        } else {
            Compression::None
        };
        self
    }

    /// Compression codec of batches. Default LZ4.
    pub fn compression(mut self, codec: Compression) -> Self {
        self.config.compression = codec;
        self
    }

    /// Timeout of one request to an agent. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// How often the agent list and topic metadata are refreshed.
    /// Default 30 s.
    pub fn agent_refresh_interval(mut self, interval: Duration) -> Self {
        self.config.agent_refresh_interval = interval;
        self
    }

    /// Retries of a batch after a retryable failure before its records fail.
    /// Default 3.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.config.max_retries = retries;
        self
    }

    /// Base retry backoff; doubles per attempt, with ±25% jitter.
    /// Default 100 ms.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.config.retry_backoff = backoff;
        self
    }

    /// Most bytes of records buffered before `send` waits (backpressure).
    /// Default 64 MiB.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.config.max_buffered_bytes = bytes;
        self
    }

    /// Largest batch, uncompressed; a bigger record is refused with
    /// [`Error::RecordTooLarge`]. Default 1 MiB.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.config.max_batch_bytes = bytes;
        self
    }

    /// Largest produce request. Default 16 MiB.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.config.max_request_bytes = bytes;
        self
    }

    /// Idempotent delivery (retries never duplicate records). Default on.
    pub fn idempotence(mut self, enabled: bool) -> Self {
        self.config.idempotence = enabled;
        self
    }

    /// Makes the producer transactional under this id (needs idempotence):
    /// call [`Producer::init_transactions`] once, then send records inside
    /// `begin_transaction` … `commit_transaction`. A new producer with the
    /// same id fences the old one. Default: none.
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.config.transactional_id = Some(id.into());
        self
    }

    /// A transaction open longer than this is aborted by the agents.
    /// Default 60 s.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.config.transaction_timeout = timeout;
        self
    }

    /// Validates the settings, discovers the agents, obtains a producer id
    /// (with idempotence) and starts the producer.
    pub async fn build(self) -> Result<Producer> {
        let c = &self.config;
        let source = Source::from_builder(self.metadata, self.bootstrap)?;
        if c.transactional_id.is_some() && !c.idempotence {
            return Err(Error::Config(
                "a transactional producer needs idempotence".into(),
            ));
        }
        if c.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        if c.agent_group.is_empty() {
            return Err(Error::Config("agent_group must not be empty".into()));
        }
        if c.max_batch_bytes > c.max_buffered_bytes || c.max_batch_bytes > c.max_request_bytes {
            return Err(Error::Config(format!(
                "max_batch_bytes ({}) must not exceed max_buffered_bytes ({}) or max_request_bytes ({})",
                c.max_batch_bytes, c.max_buffered_bytes, c.max_request_bytes
            )));
        }
        if c.max_buffered_bytes > u32::MAX as usize {
            return Err(Error::Config(
                "max_buffered_bytes must be below 4 GiB".into(),
            ));
        }
        let cluster = Arc::new(Cluster::new(
            source.clone(),
            ClusterConfig {
                group: c.agent_group.clone(),
                zone: c.zone.clone(),
                request_timeout: c.request_timeout,
                refresh_interval: c.agent_refresh_interval,
                agent_ttl: Duration::from_secs(10),
                failure_cooldown: Duration::from_secs(5),
                max_message_bytes: c.max_request_bytes + (1 << 20),
            },
        ));
        // Fail early and clearly when no agent can be found.
        cluster.agent().await?;
        let identity = if c.transactional_id.is_some() {
            None
        } else if c.idempotence {
            Some(init_producer_id(&cluster, &source, None).await?)
        } else {
            None
        };
        let (commands, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            buffer: Arc::new(ByteBudget::new(self.config.max_buffered_bytes)),
            config: self.config,
            cluster,
            source,
            topics: RwLock::default(),
            wake: Notify::new(),
            commands,
            identity: Mutex::new(identity),
            txn: Mutex::new(TxnState::Uninitialized),
            closed: AtomicBool::new(false),
        });
        let sender = tokio::spawn(run_sender(inner.clone(), rx));
        Ok(Producer {
            inner,
            sender: tokio::sync::Mutex::new(Some(sender)),
        })
    }
}

async fn init_producer_id(
    cluster: &Cluster,
    source: &Source,
    current: Option<ProducerIdentity>,
) -> Result<ProducerIdentity> {
    match source {
        Source::Metadata(store) => Ok(store.init_producer_id(current).await?),
        Source::Bootstrap(_) => {
            let request = pb::InitProducerIdRequest {
                producer_id: current.map(|c| c.producer_id),
                producer_epoch: current.map(|c| i32::from(c.epoch)),
                ..Default::default()
            };
            let r = cluster
                .call(3, |mut c| {
                    let r = request.clone();
                    async move { c.init_producer_id(r).await }
                })
                .await?;
            Ok(ProducerIdentity {
                producer_id: r.producer_id,
                epoch: r.producer_epoch as i16,
            })
        }
    }
}

/// A record to send, with everything optional but the topic.
#[derive(Clone, Debug, Default)]
pub struct ProducerRecord {
    pub topic: String,
    pub key: Option<Bytes>,
    /// `None` is a tombstone (a null value).
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// Milliseconds since the epoch; default: when it is sent.
    pub timestamp: Option<i64>,
    /// Explicit partition; default: by key hash, or sticky for keyless records.
    pub partition: Option<u32>,
}

impl ProducerRecord {
    /// A keyless record.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Where a record was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub timestamp: i64,
}

/// The base offset a batch was committed at, or why it failed.
type BatchOutcome = std::result::Result<i64, Error>;

/// The outcome of one batch, awaited by every record in it. (One cell per
/// batch, not a channel per record: completing a batch wakes its waiters
/// once each.)
#[derive(Default)]
struct BatchCell {
    state: Mutex<CellState>,
}

#[derive(Default)]
struct CellState {
    outcome: Option<BatchOutcome>,
    wakers: Vec<std::task::Waker>,
}

/// The owner's end of a [`BatchCell`]: completes it exactly once; dropped
/// uncompleted, it fails the batch with [`Error::Closed`].
struct BatchHandle(Arc<BatchCell>);

impl BatchHandle {
    fn new() -> Self {
        BatchHandle(Arc::default())
    }

    fn waiter(&self) -> BatchWait {
        BatchWait {
            cell: self.0.clone(),
            slot: None,
        }
    }

    fn complete(self, outcome: BatchOutcome) {
        self.set(outcome);
    }

    fn set(&self, outcome: BatchOutcome) {
        let wakers = {
            let mut state = self.0.state.lock().expect("batch cell lock");
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

impl Drop for BatchHandle {
    fn drop(&mut self) {
        self.set(Err(Error::Closed));
    }
}

/// Waits for a batch's outcome.
struct BatchWait {
    cell: Arc<BatchCell>,
    slot: Option<usize>,
}

impl Future for BatchWait {
    type Output = BatchOutcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BatchOutcome> {
        let this = &mut *self;
        let mut state = this.cell.state.lock().expect("batch cell lock");
        if let Some(outcome) = &state.outcome {
            return Poll::Ready(outcome.clone());
        }
        match this.slot {
            Some(i) if state.wakers[i].will_wake(cx.waker()) => {}
            Some(i) => state.wakers[i] = cx.waker().clone(),
            None => {
                this.slot = Some(state.wakers.len());
                state.wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// Resolves when a record is committed (or has failed for good).
#[must_use = "a record is only known to be written once this resolves"]
pub struct DeliveryFuture {
    batch: BatchWait,
    index: i32,
    topic: Arc<str>,
    partition: u32,
    timestamp: i64,
}

impl Future for DeliveryFuture {
    type Output = Result<SendResult>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = match Pin::new(&mut self.batch).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        Poll::Ready(outcome.map(|base| SendResult {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: base + i64::from(self.index),
            timestamp: self.timestamp,
        }))
    }
}

/// Sends records to StreamHouse; see the [module docs](self).
pub struct Producer {
    inner: Arc<Inner>,
    sender: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Inner {
    config: ProducerConfig,
    cluster: Arc<Cluster>,
    source: Source,
    topics: RwLock<HashMap<String, Arc<TopicQueues>>>,
    wake: Notify,
    commands: mpsc::UnboundedSender<Command>,
    buffer: Arc<ByteBudget>,
    identity: Mutex<Option<ProducerIdentity>>,
    /// Transaction state of a transactional producer.
    txn: Mutex<TxnState>,
    closed: AtomicBool,
}

/// Where a transactional producer is in its transaction cycle.
#[derive(Clone, Debug)]
enum TxnState {
    /// `init_transactions` not called yet.
    Uninitialized,
    Ready,
    InTransaction,
    /// A send failed inside the transaction: it can only be aborted.
    Abortable(Error),
    /// Fenced by a newer instance: nothing more can be done.
    Fatal(Error),
}

enum Command {
    /// Seal every open batch and answer with every unfinished batch.
    Flush(oneshot::Sender<Vec<BatchWait>>),
}

/// The partition queues of one topic.
struct TopicQueues {
    queues: Vec<Arc<Mutex<PartitionQueue>>>,
    /// Partition keyless records go to until its batch is sealed.
    sticky: Arc<AtomicU32>,
    /// When the partition count was last checked (epoch milliseconds).
    checked_at_ms: i64,
}

/// Bytes of records buffered, bounded: `reserve` waits while the budget is
/// spent, and batches give their bytes back when they complete.
struct ByteBudget {
    used: AtomicUsize,
    max: usize,
    freed: Notify,
}

impl ByteBudget {
    fn new(max: usize) -> Self {
        ByteBudget {
            used: AtomicUsize::new(0),
            max,
            freed: Notify::new(),
        }
    }

    /// Takes `n` bytes, waiting while that would exceed the maximum (a
    /// request is always granted when nothing else is buffered). The caller
    /// hands them to a batch's [`Reservation`] or gives them back.
    async fn reserve(&self, n: usize) {
        loop {
            let used = self.used.load(Ordering::Acquire);
            if used == 0 || used + n <= self.max {
                if self
                    .used
                    .compare_exchange(used, used + n, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            let freed = self.freed.notified();
            if self.used.load(Ordering::Acquire) + n <= self.max {
                continue;
            }
            freed.await;
        }
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}

/// Bytes a batch holds of the [`ByteBudget`], given back on drop.
struct Reservation {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Reservation {
    fn empty(budget: Arc<ByteBudget>) -> Self {
        Reservation { budget, bytes: 0 }
    }

    /// Adds bytes taken with [`ByteBudget::reserve`].
    fn absorb(&mut self, bytes: usize) {
        self.bytes += bytes;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
        }
    }
}

struct OpenBatch {
    builder: BatchBuilder,
    started: Instant,
    done: BatchHandle,
    reserved: Reservation,
}

struct Sealed {
    bytes: Bytes,
    records: i32,
    /// (epoch, base sequence) stamped in the header, for idempotent producers.
    stamp: Option<(i16, i32)>,
    attempts: u32,
    /// The last attempt failed in a way that may have committed it.
    uncertain: bool,
    last_error: Option<Error>,
    done: BatchHandle,
    _reserved: Reservation,
}

struct PartitionQueue {
    topic: Arc<str>,
    partition: u32,
    /// The topic's sticky partition, moved on when this partition's batch
    /// is sealed (by size or by timeout), as Kafka's sticky partitioner does.
    sticky: Arc<AtomicU32>,
    partition_count: u32,
    open: Option<OpenBatch>,
    sealed: VecDeque<Sealed>,
    /// Outcomes of the batches of the request in flight.
    in_flight: Vec<Arc<BatchCell>>,
    not_before: Option<Instant>,
    /// Epoch that `next_sequence` counts in.
    sequence_epoch: i16,
    next_sequence: i32,
}

impl Producer {
    /// A builder with the defaults of the configuration table.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::default()
    }

    /// The settings in use.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Sends one record and waits until it is committed. `partition` picks
    /// a partition explicitly; otherwise the key's hash does (as Kafka's
    /// default partitioner), or, without a key, a sticky partition.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        partition: Option<u32>,
    ) -> Result<SendResult> {
        let record = ProducerRecord {
            topic: topic.to_string(),
            key: key.map(Bytes::copy_from_slice),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Vec::new(),
            timestamp: None,
            partition,
        };
        self.send_record(record).await?.await
    }

    /// Adds a record to its batch and returns at once with a future of its
    /// delivery; waits only while the buffer is full (backpressure). One
    /// task can keep thousands of records in flight this way.
    pub async fn send_record(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if inner.config.transactional_id.is_some() {
            match &*inner.txn.lock().expect("txn lock") {
                TxnState::InTransaction => {}
                TxnState::Abortable(e) | TxnState::Fatal(e) => return Err(e.clone()),
                _ => {
                    return Err(Error::Transaction(
                        "a transactional producer sends only inside begin_transaction … commit_transaction".into(),
                    ));
                }
            }
        }
        let now = now_ms();
        let topic = inner.topic(&record.topic, now).await?;
        let partitions = topic.queues.len() as u32;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p < partitions => p,
            (Some(p), _) => {
                // The topic may have grown since it was looked up.
                inner.cluster.invalidate_topic(&record.topic);
                let grown = inner.refresh_topic(&record.topic).await?;
                if p >= grown.queues.len() as u32 {
                    return Err(Error::UnknownPartition {
                        topic: record.topic,
                        partition: p,
                        partition_count: grown.queues.len() as u32,
                    });
                }
                return Box::pin(self.send_record(record)).await;
            }
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => topic.sticky.load(Ordering::Relaxed) % partitions,
        };
        let size = BatchBuilder::record_size_bound(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        let max = inner.config.max_batch_bytes;
        if size + streamhouse_core::batch::BATCH_HEADER_LEN > max {
            return Err(Error::RecordTooLarge { size, max });
        }
        inner.buffer.reserve(size).await;
        let timestamp = record.timestamp.unwrap_or(now);
        let mut q = topic.queues[partition as usize]
            .lock()
            .expect("partition queue lock");
        if q.open
            .as_ref()
            .is_some_and(|o| o.builder.size_bytes() + size > max)
            && let Err(e) = inner.seal(&mut q)
        {
            inner.buffer.release(size);
            return Err(e);
        }
        if q.open.is_none() {
            q.open = Some(OpenBatch {
                builder: BatchBuilder::new(timestamp),
                started: Instant::now(),
                done: BatchHandle::new(),
                reserved: Reservation::empty(inner.buffer.clone()),
            });
            inner.wake.notify_one();
        }
        let open = q.open.as_mut().expect("opened above");
        open.reserved.absorb(size);
        let index = open.builder.push(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        let batch = open.done.waiter();
        if open.builder.record_count() >= inner.config.batch_size {
            inner.seal(&mut q)?;
            inner.wake.notify_one();
        }
        Ok(DeliveryFuture {
            batch,
            index,
            topic: q.topic.clone(),
            partition,
            timestamp,
        })
    }

    /// Sends everything buffered now and waits until every record sent
    /// before this call is delivered. Returns the first delivery error.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Flush(tx))
            .map_err(|_| Error::Closed)?;
        let batches = rx.await.map_err(|_| Error::Closed)?;
        let mut first_error = None;
        for b in batches {
            if let Err(e) = b.await
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Delivers everything sent so far, then stops the producer. Later sends
    /// fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        let flushed = self.flush().await;
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.wake.notify_one();
        if let Some(task) = self.sender.lock().await.take() {
            let _ = task.await;
        }
        match flushed {
            Err(Error::Closed) => Ok(()),
            other => other,
        }
    }
}

/// The group position a transaction commits offsets for: the consumer's
/// group and, for group members, its membership (so a fenced consumer
/// cannot commit through a transaction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    pub group_id: String,
    pub member: Option<(String, i32)>,
}

impl Producer {
    fn transactional_identity(&self) -> Result<ProducerIdentity> {
        if self.inner.config.transactional_id.is_none() {
            return Err(Error::Transaction(
                "the producer has no transactional_id".into(),
            ));
        }
        self.inner
            .identity
            .lock()
            .expect("identity lock")
            .ok_or_else(|| Error::Transaction("call init_transactions first".into()))
    }

    /// Registers the transactional id: aborts a transaction an earlier
    /// instance left open and fences that instance. Call once, before the
    /// first transaction.
    pub async fn init_transactions(&self) -> Result<()> {
        let Some(tid) = self.inner.config.transactional_id.clone() else {
            return Err(Error::Transaction(
                "the producer has no transactional_id".into(),
            ));
        };
        let request = pb::InitProducerIdRequest {
            producer_id: None,
            producer_epoch: None,
            transactional_id: Some(tid),
            transaction_timeout_ms: self.inner.config.transaction_timeout.as_millis() as i32,
        };
        let r = self
            .inner
            .cluster
            .call(3, |mut c| {
                let r = request.clone();
                async move { c.init_producer_id(r).await }
            })
            .await?;
        *self.inner.identity.lock().expect("identity lock") = Some(ProducerIdentity {
            producer_id: r.producer_id,
            epoch: r.producer_epoch as i16,
        });
        *self.inner.txn.lock().expect("txn lock") = TxnState::Ready;
        Ok(())
    }

    /// Starts a transaction: records sent until `commit_transaction` or
    /// `abort_transaction` become visible to read_committed consumers
    /// together, or not at all.
    pub fn begin_transaction(&self) -> Result<()> {
        self.transactional_identity()?;
        let mut txn = self.inner.txn.lock().expect("txn lock");
        match &*txn {
            TxnState::Ready => {
                *txn = TxnState::InTransaction;
                Ok(())
            }
            TxnState::Fatal(e) => Err(e.clone()),
            other => Err(Error::Transaction(format!(
                "cannot begin a transaction while {other:?}"
            ))),
        }
    }

    /// Adds consumed positions (the next offset to read, per partition) to
    /// the transaction: the group's offsets move only if it commits.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &HashMap<TopicPartition, i64>,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let id = self.transactional_identity()?;
        self.expect_in_transaction()?;
        let request = pb::AddOffsetsToTxnRequest {
            producer_id: id.producer_id,
            producer_epoch: id.epoch.into(),
            group_id: group.group_id.clone(),
            member_id: group.member.as_ref().map(|m| m.0.clone()),
            member_epoch: group.member.as_ref().map_or(0, |m| m.1),
            offsets: offsets
                .iter()
                .map(|(tp, &offset)| pb::OffsetToCommit {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset,
                    metadata: None,
                })
                .collect(),
        };
        let result = self
            .inner
            .cluster
            .call(3, |mut c| {
                let r = request.clone();
                async move { c.add_offsets_to_txn(r).await }
            })
            .await;
        self.check_fenced(result).map(|_| ())
    }

    fn expect_in_transaction(&self) -> Result<()> {
        match &*self.inner.txn.lock().expect("txn lock") {
            TxnState::InTransaction => Ok(()),
            TxnState::Abortable(e) | TxnState::Fatal(e) => Err(e.clone()),
            other => Err(Error::Transaction(format!(
                "no transaction is open ({other:?})"
            ))),
        }
    }

    /// A fencing error is fatal for a transactional producer.
    fn check_fenced<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result
            && e.status_code() == Some(tonic::Code::FailedPrecondition)
        {
            *self.inner.txn.lock().expect("txn lock") = TxnState::Fatal(e.clone());
        }
        result
    }

    /// Delivers every record of the transaction, then commits it (markers
    /// in every partition written, and its offsets) in one step. On a
    /// delivery failure the transaction must be aborted instead.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.expect_in_transaction()?;
        if let Err(e) = self.flush().await {
            self.inner.make_abortable(e.clone());
            return Err(e);
        }
        self.expect_in_transaction()?;
        self.end_transaction(true).await
    }

    /// Drops what was not sent yet, waits for what is in flight, and aborts
    /// the transaction: read_committed consumers never see its records.
    pub async fn abort_transaction(&self) -> Result<()> {
        match &*self.inner.txn.lock().expect("txn lock") {
            TxnState::InTransaction | TxnState::Abortable(_) => {}
            TxnState::Fatal(e) => return Err(e.clone()),
            other => {
                return Err(Error::Transaction(format!(
                    "no transaction to abort ({other:?})"
                )));
            }
        }
        fail_everything(
            &self.inner,
            &Error::Transaction("the transaction was aborted".into()),
        );
        let _ = self.flush().await;
        self.end_transaction(false).await
    }

    async fn end_transaction(&self, commit: bool) -> Result<()> {
        let id = self.transactional_identity()?;
        let request = pb::EndTxnRequest {
            producer_id: id.producer_id,
            producer_epoch: id.epoch.into(),
            commit,
        };
        let result = self
            .inner
            .cluster
            .call(5, |mut c| async move { c.end_txn(request).await })
            .await;
        let r = self.check_fenced(result)?;
        // Every transaction ends with a new epoch; sequences restart at 0.
        *self.inner.identity.lock().expect("identity lock") = Some(ProducerIdentity {
            producer_id: r.producer_id,
            epoch: r.producer_epoch as i16,
        });
        *self.inner.txn.lock().expect("txn lock") = TxnState::Ready;
        Ok(())
    }
}

impl Inner {
    fn make_abortable(&self, e: Error) {
        let mut txn = self.txn.lock().expect("txn lock");
        if matches!(*txn, TxnState::InTransaction) {
            *txn = TxnState::Abortable(e);
        }
    }
}

impl Drop for Producer {
    /// Dropping a producer stops it: what is buffered is still sent, and
    /// the sender task ends once nothing is left.
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.wake.notify_one();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Inner {
    /// The queues of a topic, looked up (and its partition count checked
    /// against the cluster) at most once per refresh interval.
    async fn topic(&self, name: &str, now_ms: i64) -> Result<Arc<TopicQueues>> {
        if let Some(t) = self.topics.read().expect("topics lock").get(name)
            && now_ms.saturating_sub(t.checked_at_ms)
                < self.config.agent_refresh_interval.as_millis() as i64
        {
            return Ok(t.clone());
        }
        self.refresh_topic(name).await
    }

    async fn refresh_topic(&self, name: &str) -> Result<Arc<TopicQueues>> {
        let count = self.cluster.partitions(name).await?;
        let mut topics = self.topics.write().expect("topics lock");
        let old = topics.get(name).cloned();
        let mut queues = old.as_ref().map(|t| t.queues.clone()).unwrap_or_default();
        let topic: Arc<str> = name.into();
        let sticky = old.as_ref().map_or_else(
            || Arc::new(AtomicU32::new(rand::random::<u32>() % count.max(1))),
            |t| t.sticky.clone(),
        );
        let epoch = self
            .identity
            .lock()
            .expect("identity lock")
            .map_or(0, |i| i.epoch);
        // Partitions are only ever added: keep the queues we have.
        for partition in queues.len() as u32..count {
            queues.push(Arc::new(Mutex::new(PartitionQueue {
                topic: topic.clone(),
                partition,
                sticky: sticky.clone(),
                partition_count: count,
                open: None,
                sealed: VecDeque::new(),
                in_flight: Vec::new(),
                not_before: None,
                sequence_epoch: epoch,
                next_sequence: 0,
            })));
        }
        let t = Arc::new(TopicQueues {
            queues,
            sticky,
            checked_at_ms: now_ms(),
        });
        topics.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// Closes the open batch of `q`: compresses it, stamps the producer id,
    /// epoch and next sequence, and queues it for sending.
    fn seal(&self, q: &mut PartitionQueue) -> Result<()> {
        let Some(open) = q.open.take() else {
            return Ok(());
        };
        if q.partition_count > 1 {
            let next = (q.partition + 1 + rand::random::<u32>() % (q.partition_count - 1))
                % q.partition_count;
            let _ =
                q.sticky
                    .compare_exchange(q.partition, next, Ordering::Relaxed, Ordering::Relaxed);
        }
        let records = open.builder.record_count() as i32;
        let identity = *self.identity.lock().expect("identity lock");
        let (producer_id, stamp) = match identity {
            Some(id) => {
                if q.sequence_epoch != id.epoch {
                    q.sequence_epoch = id.epoch;
                    q.next_sequence = 0;
                }
                let seq = q.next_sequence;
                q.next_sequence = streamhouse_metadata::add_sequence(seq, records);
                (id.producer_id, Some((id.epoch, seq)))
            }
            None => (-1, None),
        };
        let bytes = open.builder.finish(
            self.config.compression,
            producer_id,
            stamp.map_or(-1, |s| s.0),
            stamp.map_or(-1, |s| s.1),
            self.config.transactional_id.is_some(),
        );
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                let e = Error::from(e);
                open.done.complete(Err(e.clone()));
                return Err(e);
            }
        };
        q.sealed.push_back(Sealed {
            bytes,
            records,
            stamp,
            attempts: 0,
            uncertain: false,
            last_error: None,
            done: open.done,
            _reserved: open.reserved,
        });
        Ok(())
    }

    fn queues(&self) -> Vec<Arc<Mutex<PartitionQueue>>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .flat_map(|t| t.queues.iter().cloned())
            .collect()
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.config.retry_backoff.as_secs_f64()
            * 2f64.powi(attempts.saturating_sub(1).min(16) as i32);
        let jitter = 0.75 + rand::random::<f64>() * 0.5;
        Duration::from_secs_f64((base * jitter).min(30.0))
    }
}

/// Renumbers the batches of `q` that may be re-sequenced (never sent, or
/// known not to be committed) under the current epoch, in queue order.
fn restamp(q: &mut PartitionQueue, id: ProducerIdentity) -> Result<()> {
    // Uncertain batches (possibly committed) keep their stamps; they are
    // always at the front, as they were sent first.
    let first = q
        .sealed
        .iter()
        .position(|b| !b.uncertain)
        .unwrap_or(q.sealed.len());
    let needs = q.sequence_epoch != id.epoch
        || q.sealed
            .iter()
            .skip(first)
            .any(|b| b.stamp.is_some_and(|s| s.0 != id.epoch));
    if !needs {
        return Ok(());
    }
    let mut seq = match first.checked_sub(1).and_then(|i| q.sealed[i].stamp) {
        Some((epoch, s)) if epoch == id.epoch => {
            streamhouse_metadata::add_sequence(s, q.sealed[first - 1].records)
        }
        _ => 0,
    };
    for b in q.sealed.iter_mut().skip(first) {
        let mut bytes = b.bytes.to_vec();
        streamhouse_core::set_producer(&mut bytes, id.producer_id, id.epoch, seq)?;
        b.bytes = bytes.into();
        b.stamp = Some((id.epoch, seq));
        seq = streamhouse_metadata::add_sequence(seq, b.records);
    }
    q.sequence_epoch = id.epoch;
    q.next_sequence = seq;
    Ok(())
}

/// Batches of one partition travelling in one request.
struct InFlight {
    queue: Arc<Mutex<PartitionQueue>>,
    batches: Vec<Sealed>,
}

type RequestDone = (Vec<InFlight>, Option<String>, Result<pb::ProduceResponse>);

/// The sender task: seals due batches, sends requests, handles answers.
async fn run_sender(inner: Arc<Inner>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut requests: FuturesUnordered<BoxFuture<'static, RequestDone>> = FuturesUnordered::new();
    let mut bump_needed = false;
    let mut bump_not_before: Option<Instant> = None;
    loop {
        if bump_needed && inner.config.transactional_id.is_some() {
            // Sequence continuity is lost inside a transaction: it can only
            // be aborted (which starts a new epoch).
            let e = Error::Transaction(
                "a batch of the transaction failed; abort the transaction".into(),
            );
            inner.make_abortable(e.clone());
            fail_everything(&inner, &e);
            bump_needed = false;
        }
        if bump_needed && bump_not_before.is_none_or(|t| t <= Instant::now()) {
            match bump_epoch(&inner).await {
                Ok(()) => bump_needed = false,
                Err(e) if e.is_retryable() => {
                    bump_not_before = Some(Instant::now() + inner.backoff(1));
                }
                Err(e) => {
                    tracing::error!(error = %e, "producer fenced; failing buffered records");
                    fail_everything(&inner, &e);
                    inner.closed.store(true, Ordering::Relaxed);
                    bump_needed = false;
                }
            }
        }
        let (deadline, pending) = gather(&inner, &mut requests, bump_needed);
        if inner.closed.load(Ordering::Relaxed) && !pending && requests.is_empty() {
            // Answer flushes still queued; nothing is left to deliver.
            while let Ok(Command::Flush(reply)) = commands.try_recv() {
                let _ = reply.send(Vec::new());
            }
            return;
        }
        let deadline = match (deadline, bump_needed.then_some(bump_not_before).flatten()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            Some(command) = commands.recv() => match command {
                Command::Flush(reply) => {
                    let mut batches = Vec::new();
                    for queue in inner.queues() {
                        let mut q = queue.lock().expect("partition queue lock");
                        if let Err(e) = inner.seal(&mut q) {
                            tracing::warn!(error = %e, "sealing batch failed");
                        }
                        batches.extend(q.in_flight.iter().map(|cell| BatchWait {
                            cell: cell.clone(),
                            slot: None,
                        }));
                        batches.extend(q.sealed.iter().map(|b| b.done.waiter()));
                    }
                    let _ = reply.send(batches);
                }
            },
            Some((flights, agent, result)) = requests.next(), if !requests.is_empty() => {
                if let Some(agent) = &agent
                    && result.as_ref().is_err_and(Error::is_retryable)
                {
                    inner.cluster.report_failure(agent);
                }
                bump_needed |= handle_response(&inner, flights, result);
            }
            _ = inner.wake.notified() => {}
            _ = sleep_until(deadline) => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Seals batches whose timeout passed and starts a request with every
/// partition ready to send. Returns the next time something is due and
/// whether any record is still waiting.
fn gather(
    inner: &Arc<Inner>,
    requests: &mut FuturesUnordered<BoxFuture<'static, RequestDone>>,
    hold: bool,
) -> (Option<Instant>, bool) {
    let now = Instant::now();
    let closing = inner.closed.load(Ordering::Relaxed);
    let identity = *inner.identity.lock().expect("identity lock");
    let mut deadline: Option<Instant> = None;
    let mut pending = false;
    let mut flights = Vec::new();
    let mut bytes = 0usize;
    let mut due = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
    for queue in inner.queues() {
        let mut q = queue.lock().expect("partition queue lock");
        if let Some(open) = &q.open {
            let at = open.started + inner.config.batch_timeout;
            if at <= now || closing {
                if let Err(e) = inner.seal(&mut q) {
                    tracing::warn!(error = %e, "sealing batch failed");
                }
            } else {
                due(at);
            }
        }
        pending |= q.open.is_some() || !q.sealed.is_empty() || !q.in_flight.is_empty();
        if hold || !q.in_flight.is_empty() || q.sealed.is_empty() {
            continue;
        }
        if let Some(t) = q.not_before.filter(|&t| t > now) {
            due(t);
            continue;
        }
        if bytes >= inner.config.max_request_bytes {
            due(now);
            continue;
        }
        if let Some(id) = identity
            && let Err(e) = restamp(&mut q, id)
        {
            tracing::error!(error = %e, "re-sequencing batch failed");
            continue;
        }
        // One request per partition at a time, with batches of one epoch.
        let epoch = q.sealed.front().and_then(|b| b.stamp.map(|s| s.0));
        let mut batches = Vec::new();
        while let Some(b) = q.sealed.front() {
            let fits =
                batches.is_empty() || bytes + b.bytes.len() <= inner.config.max_request_bytes;
            if !fits || b.stamp.map(|s| s.0) != epoch {
                break;
            }
            bytes += b.bytes.len();
            batches.push(q.sealed.pop_front().expect("front exists"));
        }
        q.in_flight = batches.iter().map(|b| b.done.0.clone()).collect();
        q.not_before = None;
        drop(q);
        flights.push(InFlight { queue, batches });
    }
    if !flights.is_empty() {
        requests.push(Box::pin(send_request(inner.clone(), flights)));
    }
    (deadline, pending)
}

async fn send_request(inner: Arc<Inner>, flights: Vec<InFlight>) -> RequestDone {
    let mut request = pb::ProduceRequest {
        partitions: Vec::with_capacity(flights.len()),
    };
    for f in &flights {
        let q = f.queue.lock().expect("partition queue lock");
        let records = if f.batches.len() == 1 {
            f.batches[0].bytes.clone()
        } else {
            let mut buf = Vec::with_capacity(f.batches.iter().map(|b| b.bytes.len()).sum());
            for b in &f.batches {
                buf.extend_from_slice(&b.bytes);
            }
            buf.into()
        };
        request.partitions.push(pb::PartitionRecords {
            topic: q.topic.to_string(),
            partition: q.partition,
            records,
        });
    }
    let conn = match inner.cluster.agent().await {
        Ok(c) => c,
        Err(e) => return (flights, None, Err(e)),
    };
    let timeout = inner.config.request_timeout;
    let mut client = conn.client.clone();
    let result = match tokio::time::timeout(timeout, client.produce(request)).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(Error::Rpc {
            address: conn.address.clone(),
            status: Arc::new(status),
        }),
        Err(_) => Err(Error::Timeout {
            address: conn.address.clone(),
            timeout,
        }),
    };
    (flights, Some(conn.id), result)
}

/// What to do with one batch after an answer.
enum Fate {
    Done(i64),
    /// Retry; `uncertain` when the batch may have been committed.
    Retry {
        uncertain: bool,
        error: Error,
    },
    Fail(Error),
}

/// Applies a produce answer; returns whether the producer epoch must be
/// bumped (sequence continuity was lost).
fn handle_response(
    inner: &Arc<Inner>,
    flights: Vec<InFlight>,
    result: Result<pb::ProduceResponse>,
) -> bool {
    let mut bump = false;
    let current_epoch = inner
        .identity
        .lock()
        .expect("identity lock")
        .map(|i| i.epoch);
    let mut results = match &result {
        Ok(r) => r.results.iter().map(Some).collect::<Vec<_>>(),
        Err(_) => vec![None; flights.len()],
    };
    results.resize(flights.len(), None);
    for (flight, partition_result) in flights.into_iter().zip(results) {
        let mut q = flight.queue.lock().expect("partition queue lock");
        q.in_flight.clear();
        let (topic, partition) = (q.topic.to_string(), q.partition);
        let rejected = |code: ErrorCode, message: &str| Error::Rejected {
            topic: topic.clone(),
            partition,
            code,
            message: message.to_string(),
        };
        let mut fates = Vec::with_capacity(flight.batches.len());
        let mut earlier_retry = false;
        for (i, b) in flight.batches.iter().enumerate() {
            let fate = match (&result, partition_result) {
                (Err(e), _) => Fate::Retry {
                    uncertain: true,
                    error: e.clone(),
                },
                (Ok(_), None) => Fate::Retry {
                    uncertain: true,
                    error: rejected(
                        ErrorCode::Internal,
                        "the agent's answer omitted this partition",
                    ),
                },
                (Ok(_), Some(pr)) if pr.error != ErrorCode::None as i32 => {
                    let code = ErrorCode::try_from(pr.error).unwrap_or(ErrorCode::Internal);
                    if matches!(code, ErrorCode::UnknownPartition | ErrorCode::UnknownTopic) {
                        inner.cluster.invalidate_topic(&topic);
                    }
                    let error = rejected(code, &pr.message);
                    if code_is_retryable(code) {
                        Fate::Retry {
                            uncertain: false,
                            error,
                        }
                    } else {
                        Fate::Fail(error)
                    }
                }
                (Ok(_), Some(pr)) => match pr.batches.get(i) {
                    None => Fate::Retry {
                        uncertain: true,
                        error: rejected(ErrorCode::Internal, "the agent's answer omitted a batch"),
                    },
                    Some(br) if br.error == ErrorCode::None as i32 => Fate::Done(br.base_offset),
                    Some(br) => {
                        let code = ErrorCode::try_from(br.error).unwrap_or(ErrorCode::Internal);
                        let error = rejected(code, &br.message);
                        match code {
                            c if code_is_retryable(c) => Fate::Retry {
                                uncertain: true,
                                error,
                            },
                            ErrorCode::OutOfOrderSequence => {
                                // Follows a batch being retried: retry in order.
                                // Otherwise the sequence was lost: new epoch.
                                if !earlier_retry {
                                    bump = true;
                                }
                                Fate::Retry {
                                    uncertain: false,
                                    error,
                                }
                            }
                            ErrorCode::ProducerFenced if b.stamp.map(|s| s.0) < current_epoch => {
                                // Stamped before our own epoch bump: not
                                // committed; re-sequence and resend.
                                Fate::Retry {
                                    uncertain: false,
                                    error,
                                }
                            }
                            _ => Fate::Fail(error),
                        }
                    }
                },
            };
            earlier_retry |= matches!(fate, Fate::Retry { .. });
            fates.push(fate);
        }
        // Apply in order; batches to retry go back to the front, in order.
        let mut retry = Vec::new();
        let mut gave_up: Option<Error> = None;
        for (mut b, fate) in flight.batches.into_iter().zip(fates) {
            if let Some(e) = &gave_up {
                // Behind a batch given up on: fail what may be committed
                // after it; the rest is re-sequenced after the epoch bump.
                if b.uncertain {
                    b.done.complete(Err(e.clone()));
                    continue;
                }
            }
            match fate {
                Fate::Done(base) => {
                    b.done.complete(Ok(base));
                }
                Fate::Fail(e) => {
                    b.done.complete(Err(e));
                }
                Fate::Retry { uncertain, error } => {
                    b.attempts += 1;
                    b.uncertain = uncertain;
                    if b.attempts > inner.config.max_retries {
                        let e = Error::RetriesExhausted {
                            topic: topic.clone(),
                            partition,
                            attempts: b.attempts,
                            last: Arc::new(error),
                        };
                        if b.uncertain && b.stamp.is_some() {
                            bump = true;
                        }
                        b.done.complete(Err(e.clone()));
                        gave_up = Some(e);
                    } else {
                        b.last_error = Some(error);
                        retry.push(b);
                    }
                }
            }
        }
        if let Some(first) = retry.first() {
            if let Some(e) = &first.last_error {
                tracing::debug!(%topic, partition, attempts = first.attempts, error = %e, "retrying");
            }
            let attempts = first.attempts;
            q.not_before = Some(Instant::now() + inner.backoff(attempts));
        }
        for b in retry.into_iter().rev() {
            q.sealed.push_front(b);
        }
    }
    inner.wake.notify_one();
    bump
}

/// Bumps the producer epoch after sequence continuity was lost; every
/// partition then re-sequences its unsent batches from 0.
async fn bump_epoch(inner: &Arc<Inner>) -> Result<()> {
    let current = *inner.identity.lock().expect("identity lock");
    let Some(current) = current else {
        return Ok(());
    };
    let next = init_producer_id(&inner.cluster, &inner.source, Some(current)).await?;
    tracing::info!(
        producer_id = next.producer_id,
        epoch = next.epoch,
        "bumped producer epoch"
    );
    *inner.identity.lock().expect("identity lock") = Some(next);
    Ok(())
}

fn fail_everything(inner: &Arc<Inner>, e: &Error) {
    for queue in inner.queues() {
        let mut q = queue.lock().expect("partition queue lock");
        if let Some(open) = q.open.take() {
            open.done.complete(Err(e.clone()));
        }
        for b in q.sealed.drain(..) {
            b.done.complete(Err(e.clone()));
        }
    }
}
