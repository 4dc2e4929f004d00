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

mod accumulator;
mod budget;
mod config;
mod delivery;
mod record;
mod sender;
#[cfg(test)]
mod sender_tests;
mod transactions;
mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use streamhouse_core::BatchBuilder;
use streamhouse_metadata::ProducerIdentity;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;

use accumulator::{OpenBatch, TopicQueues};
use budget::{ByteBudget, Reservation};
use delivery::{BatchHandle, BatchWait};
use transactions::TxnState;
use transport::Transport;

pub use config::{ProducerBuilder, ProducerConfig};
pub use delivery::DeliveryFuture;
pub use record::{ProducerRecord, SendResult};

/// Sends records to StreamHouse; the design is in the `producer` module docs
/// (`cargo doc --document-private-items`).
pub struct Producer {
    inner: Arc<Inner>,
    sender: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Inner {
    config: ProducerConfig,
    /// Where transaction calls go.
    cluster: Arc<Cluster>,
    /// Where the sender's requests go.
    transport: Arc<dyn Transport>,
    topics: RwLock<HashMap<String, Arc<TopicQueues>>>,
    wake: Notify,
    commands: mpsc::UnboundedSender<Command>,
    buffer: Arc<ByteBudget>,
    identity: Mutex<Option<ProducerIdentity>>,
    /// Transaction state of a transactional producer.
    txn: Mutex<TxnState>,
    closed: AtomicBool,
}

enum Command {
    /// Seal every open batch and answer with every unfinished batch.
    Flush(oneshot::Sender<Vec<BatchWait>>),
}

impl Producer {
    /// Starts the sender task of a producer with these settings.
    fn start(
        config: ProducerConfig,
        cluster: Arc<Cluster>,
        transport: Arc<dyn Transport>,
        identity: Option<ProducerIdentity>,
    ) -> Producer {
        let (commands, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            buffer: Arc::new(ByteBudget::new(config.max_buffered_bytes)),
            config,
            cluster,
            transport,
            topics: RwLock::default(),
            wake: Notify::new(),
            commands,
            identity: Mutex::new(identity),
            txn: Mutex::new(TxnState::Uninitialized),
            closed: AtomicBool::new(false),
        });
        let sender = tokio::spawn(sender::run_sender(inner.clone(), rx));
        Producer {
            inner,
            sender: tokio::sync::Mutex::new(Some(sender)),
        }
    }

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
                inner.transport.invalidate_topic(&record.topic);
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
